"""How late this replica hears the fleet, so that a delay on the platform's side is not taken for silence.

A heartbeat stamped ``sent_at`` by its agent and handled at ``now`` (the platform's clock) is ``now - sent_at``
late: its way through NATS and health's inbox, plus the difference between the two clocks. That difference is
the cluster's own and stays put, so a cluster's least lateness seen is its baseline, and what a heartbeat is late
beyond its cluster's baseline is delay.

When the platform falls behind (nats-server's read loops seconds behind in a fleet's reconnect storm, health
sharing a busy core, heartbeats waiting in the server's buffer for health or in its socket, where its inbox count
does not see them), most heartbeats are late together, and a cluster whose heartbeats took 9 s instead of 0.1 s
had 14 s between two of them: shown offline although it never stopped. A cluster that really stopped makes no
other cluster late. So the fleet's median delay over the last heartbeat period is what health adds to a
silence's budget before it calls a cluster offline (never more than a cap): one cluster's own lateness, or a few
hostile agents' made-up ``sent_at``, moves a median of the whole fleet by nothing.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import math
from collections import deque

RELAX = 0.01
"""How fast a cluster's baseline rises to follow its clock, in seconds per second since its last heartbeat: a
baseline never rises on its own otherwise, and a platform clock stepped forward by NTP would read as delay for
good. 1 %: a 2 s step is forgotten in ~200 s, and a real delay of a minute is underestimated by 0.6 s."""


class Lateness:
    """The fleet's median heartbeat delay beyond each cluster's usual, over the last ``span`` seconds."""

    def __init__(self, span: float, cap: float, max_clusters: int = 200_000) -> None:
        self.span = span
        """Seconds of heartbeats the median is taken over (one heartbeat period: each cluster counted about once)."""
        self.cap = cap
        """The most delay ever allowed for (a delay past it is the platform's outage, not lateness)."""
        self.max_clusters = max_clusters
        self._baseline: dict[str, tuple[float, float]] = {}
        """Per cluster: its least lateness (relaxed upward over time), and when it was last heard."""
        self._windows: deque[tuple[float, list[float]]] = deque()
        """(when the window opened, the delays heard in it), oldest first."""

    def heard(self, cluster: str, lateness: float, now: float) -> None:
        """A heartbeat of ``cluster`` handled at ``now`` was ``lateness`` seconds after its ``sent_at``."""
        if not math.isfinite(lateness):
            return
        known = self._baseline.get(cluster)
        if known is None:
            # A first heartbeat says nothing of delay (nothing to compare with).
            if len(self._baseline) >= self.max_clusters:
                self._baseline.clear()  # a bound on memory: forgetting only costs each cluster one sample
            self._baseline[cluster] = (lateness, now)
            return
        base = known[0] + RELAX * max(0.0, now - known[1])
        self._baseline[cluster] = (min(base, lateness), now)
        if lateness > base:
            self._window(now).append(lateness - base)
        else:
            self._window(now).append(0.0)

    def forget(self, cluster: str) -> None:
        self._baseline.pop(cluster, None)

    def behind(self, now: float) -> float:
        """The median delay of the heartbeats heard in the last ``span`` seconds (0 with none), at most ``cap``."""
        self._drop_before(now - self.span)
        delays = sorted(d for _, window in self._windows for d in window)
        if not delays:
            return 0.0
        return min(self.cap, delays[len(delays) // 2])

    def _window(self, now: float) -> list[float]:
        # One list per second: dropping the old ones is one pop each, not one per heartbeat.
        if not self._windows or now - self._windows[-1][0] >= 1.0:
            self._drop_before(now - self.span)  # here too: nothing piles up while no sweep asks
            self._windows.append((now, []))
        return self._windows[-1][1]

    def _drop_before(self, start: float) -> None:
        while self._windows and self._windows[0][0] <= start:
            self._windows.popleft()
