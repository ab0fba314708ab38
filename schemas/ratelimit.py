"""Per-key token buckets, for what one agent may make a service do (pure: no I/O, the clock passed in)."""

from __future__ import annotations


class RateLimiter:
    """Per-cluster token buckets: a cluster may do something ``rate`` times a second (bursts up to ``burst``).

    Health checks it first on every heartbeat, before it is decoded, so one agent's flood costs a dictionary
    look-up per message and never delays another cluster's heartbeats; the registry, on the JetStream requests
    an agent's hellos cost. The clock is passed in (monotonic)."""

    def __init__(self, rate: float, burst: float, max_clusters: int = 200_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clusters = max_clusters
        self._tokens: dict[str, tuple[float, float]] = {}
        self.dropped: dict[str, int] = {}
        """Refusals per cluster since the last ``take_dropped``."""

    def allow(self, cluster: str, now: float) -> bool:
        tokens, at = self._tokens.get(cluster, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        if tokens < 1.0:
            self._tokens[cluster] = (tokens, now)
            self.dropped[cluster] = self.dropped.get(cluster, 0) + 1
            return False
        if len(self._tokens) >= self.max_clusters and cluster not in self._tokens:
            self._tokens.clear()  # a bound on memory; forgetting only ever lets a burst through again
        self._tokens[cluster] = (tokens - 1.0, now)
        return True

    def take_dropped(self) -> dict[str, int]:
        dropped, self.dropped = self.dropped, {}
        return dropped
