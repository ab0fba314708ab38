"""How late this replica hears the fleet, so that a delay on the platform's side is not taken for silence.

A heartbeat stamped ``sent_at`` by its agent and handled at ``now`` (the platform's clock) is ``now - sent_at``
late: its way through NATS and health's inbox, plus the difference between the two clocks. That difference is
the cluster's own and stays put, so a cluster's least lateness seen is its baseline, and what a heartbeat is late
beyond its cluster's baseline is delay.

When the platform falls behind (nats-server's read loops seconds behind in a fleet's reconnect storm, health
sharing a busy core, heartbeats waiting in the server's buffer for health or in its socket, where its inbox count
does not see them), most heartbeats are late together, and a cluster whose heartbeats took 9 s instead of 0.1 s
had 14 s between two of them: shown offline although it never stopped. A cluster that really stopped makes no
other cluster late. So the fleet's median delay (each cluster's latest heartbeat of the last heartbeat period,
once) is what health adds to a silence's budget before it calls a cluster offline, never more than a cap: one
cluster's own lateness, or a few hostile agents' made-up ``sent_at`` however often they send, moves the lower
median of the whole fleet by nothing (over half the clusters heard would have to be late). Nor can one or two
clusters when few are heard (``CORROBORATED``): with the median of those heard alone, one hostile agent of a
two-cluster platform was the whole median once the other stopped, and put off that one's offline by the cap.

Pure: no I/O, the clock passed in.
"""

from __future__ import annotations

import math

CORROBORATED = 3
"""Clusters that must be heard at least as late as the delay allowed for: fewer can be hostile agents (or one
cluster's own trouble). A fleet's stall is heard from every cluster within a heartbeat period."""
RELAX = 0.01
"""How fast a cluster's baseline rises to follow its clock, in seconds per second since its last heartbeat: a
baseline never rises on its own otherwise, and a platform clock stepped forward by NTP would read as delay for
good. 1 %: a 2 s step is forgotten in ~200 s, and a real delay of a minute is underestimated by 0.6 s."""


class Lateness:
    """The fleet's median heartbeat delay beyond each cluster's usual, each cluster counted once: its latest
    heartbeat of the last ``span`` seconds (an agent that sends ten a second weighs what one that sends one
    every five seconds does, so a hostile agent's made-up ``sent_at`` counts once)."""

    def __init__(self, span: float, cap: float, max_clusters: int = 200_000) -> None:
        self.span = span
        """Seconds a cluster's latest delay counts for (one heartbeat period)."""
        self.cap = cap
        """The most delay ever allowed for (a delay past it is the platform's outage, not lateness)."""
        self.max_clusters = max_clusters
        self._baseline: dict[str, tuple[float, float]] = {}
        """Per cluster: its least lateness (relaxed upward over time), and when it was last heard."""
        self._latest: dict[str, tuple[float, float]] = {}
        """Per cluster: the delay of its latest heartbeat beyond its baseline, and when it was heard."""

    def heard(self, cluster: str, lateness: float, now: float) -> None:
        """A heartbeat of ``cluster`` handled at ``now`` was ``lateness`` seconds after its ``sent_at``."""
        if not math.isfinite(lateness):
            return
        known = self._baseline.get(cluster)
        if known is None:
            # A first heartbeat says nothing of delay (nothing to compare with).
            if len(self._baseline) >= self.max_clusters:
                self._baseline.clear()  # a bound on memory: forgetting only costs each cluster one sample
                self._latest.clear()
            self._baseline[cluster] = (lateness, now)
            return
        base = known[0] + RELAX * max(0.0, now - known[1])
        self._baseline[cluster] = (min(base, lateness), now)
        self._latest[cluster] = (max(0.0, lateness - base), now)

    def forget(self, cluster: str) -> None:
        self._baseline.pop(cluster, None)
        self._latest.pop(cluster, None)

    def behind(self, now: float) -> float:
        """The lower median of the clusters' delays heard in the last ``span`` seconds, at most ``cap``, and at
        most the delay of the ``CORROBORATED``-th latest (0 with fewer heard): to move it, over half the clusters
        heard, and at least three, must be late."""
        since = now - self.span
        delays = sorted(delay for delay, at in self._latest.values() if at > since)
        if len(delays) < CORROBORATED:
            return 0.0
        return min(self.cap, delays[min((len(delays) - 1) // 2, len(delays) - CORROBORATED)])
