"""Pure presence rules. ``now`` is always the platform's clock, never the agent's."""

from __future__ import annotations

from typing import Literal, NamedTuple

import msgspec

from schemas.conditions import set_condition
from schemas.messages import ClusterHealth, Condition, Heartbeat, Presence

Transition = Literal["online", "offline"] | None

LINK_UP = "LinkUp"
HEALTHY = "Healthy"


def health_condition(health: ClusterHealth, now: float) -> Condition:
    """'Cluster healthy' is a fact apart from 'link up'."""
    if not health.api_reachable:
        return Condition(
            type=HEALTHY,
            status="False",
            reason="APIServerUnreachable",
            message="the agent cannot reach the cluster's API server",
            last_transition_time=now,
        )
    if health.nodes_total == 0:
        return Condition(
            type=HEALTHY,
            status="False",
            reason="NoNodes",
            message="the cluster reports no nodes",
            last_transition_time=now,
        )
    if health.nodes_ready < health.nodes_total:
        return Condition(
            type=HEALTHY,
            status="False",
            reason="NodesNotReady",
            message=f"{health.nodes_ready}/{health.nodes_total} nodes ready",
            last_transition_time=now,
        )
    return Condition(
        type=HEALTHY,
        status="True",
        reason="AllNodesReady",
        message=f"{health.nodes_ready}/{health.nodes_total} nodes ready",
        last_transition_time=now,
    )


def observe(current: Presence | None, hb: Heartbeat, now: float) -> tuple[Presence, Transition]:
    """A heartbeat arrived at ``now``."""
    was_online = current is not None and current.online
    conditions = current.conditions if current else ()
    conditions = set_condition(
        conditions,
        Condition(
            type=LINK_UP,
            status="True",
            reason="HeartbeatReceived",
            message="the agent is connected",
            last_transition_time=now,
        ),
    )
    conditions = set_condition(conditions, health_condition(hb.health, now))
    presence = Presence(
        cluster=hb.cluster,
        online=True,
        last_seen=now,
        connected_since=current.connected_since if was_online and current else now,
        session=hb.session,
        health=hb.health,
        conditions=conditions,
    )
    return presence, (None if was_online else "online")


def is_overdue(presence: Presence, now: float, offline_after: float, not_before: float = 0.0) -> bool:
    """Online, and silent for longer than ``offline_after`` counted from the later of its last heartbeat and
    ``not_before`` (when the judging replica started listening)."""
    return presence.online and now - max(presence.last_seen, not_before) > offline_after


def silence_counts_from(listening_since: float, last_first_heard: float, hold: float) -> float:
    """When this replica starts counting the silence of a cluster it has not heard since it started
    listening (``listening_since``: its own start, or its link back).

    Then the fleet is coming back too (agents reconnect over many seconds after a restart: 30 s at 10,000),
    and a cluster not heard yet is most likely one still reconnecting, not a dead one: marking it offline
    and online again a few seconds later cost two fsynced writes and two public events per cluster, one
    after another in the heartbeats' path (half of 10,000 clusters, 47 s of a restart). So its silence counts
    from the latest first heartbeat of any cluster since (``last_first_heard``: while first heartbeats still
    arrive, the fleet is still reconnecting), but never from later than ``hold`` seconds after listening
    started. A cluster heard once since is judged as always (``offline_after`` from its last heartbeat)."""
    return min(max(listening_since, last_first_heard), listening_since + max(0.0, hold))


def mark_offline(presence: Presence, now: float, reason: str, message: str) -> Presence:
    conditions = set_condition(
        presence.conditions,
        Condition(type=LINK_UP, status="False", reason=reason, message=message, last_transition_time=now),
    )
    conditions = set_condition(
        conditions,
        Condition(
            type=HEALTHY,
            status="Unknown",
            reason="LinkDown",
            message="no heartbeat: health unknown",
            last_transition_time=now,
        ),
    )
    return msgspec.structs.replace(presence, online=False, connected_since=0.0, conditions=conditions)


def sweep(presence: Presence, now: float, offline_after: float, not_before: float = 0.0) -> tuple[Presence, Transition]:
    """Periodic check: an online cluster whose heartbeats stopped goes offline.

    A replica judges only what it could have heard: ``not_before`` is when it started listening, so a
    restarted replica never calls a cluster offline for heartbeats it was not there to receive (its stored
    last-seen time may be older than the cluster's last heartbeat)."""
    if not is_overdue(presence, now, offline_after, not_before):
        return presence, None
    silent = now - presence.last_seen
    return (
        mark_offline(presence, now, "HeartbeatMissed", f"no heartbeat for {silent:.1f}s"),
        "offline",
    )


def merge_seen(stored: Presence, mine: Presence, min_advance: float = 0.0) -> Presence | None:
    """Fold this replica's newer last-seen/health into the stored record (None: nothing worth writing).

    A last-seen time that moved less than ``min_advance`` seconds is not worth a write, and neither is a change
    in the tenants' control planes alone (they change with every sleep, wake and upgrade: written at once, that
    was one more fsynced write per command); a new session or a change of the cluster's own health (nodes,
    reachability, capacity, versions) always is. The stored copy is read only by a replica that starts, and
    every replica has the full report again from the cluster's next heartbeat."""
    if mine.last_seen <= stored.last_seen:
        return None
    if (
        mine.last_seen - stored.last_seen < min_advance
        and mine.session == stored.session
        and _cluster_level(mine.health) == _cluster_level(stored.health)
    ):
        return None
    return msgspec.structs.replace(stored, last_seen=mine.last_seen, health=mine.health, session=mine.session)


def is_refresh(stored: Presence, new: Presence) -> bool:
    """Whether writing ``new`` over ``stored`` only moves its last-seen time (and the tenants' control planes)
    forward: the same session and the same health of the cluster itself."""
    return new.session == stored.session and _cluster_level(new.health) == _cluster_level(stored.health)


class Allowance:
    """So many refresh writes per flush (None: no limit); writes that are not refreshes are never counted."""

    def __init__(self, limit: float | None) -> None:
        self.left = limit

    def take(self, refresh: bool) -> bool:
        """Whether this write may go now (taking one of the allowance if it is a refresh)."""
        if not refresh or self.left is None:
            return True
        if self.left < 1:
            return False
        self.left -= 1
        return True


def _cluster_level(health: ClusterHealth) -> ClusterHealth:
    return msgspec.structs.replace(health, control_planes=()) if health.control_planes else health


# --- heartbeat floods --------------------------------------------------------------------------------------
class Inbox(NamedTuple):
    """What this replica's heartbeat subscription and connection say of its hearing, at a sweep."""

    backlog: int
    """Heartbeats received and not handled yet."""
    dropped: int
    """Heartbeats its client dropped unhandled since it subscribed, its inbox full (a slow consumer)."""
    reconnects: int
    """Times its connection was made again."""


def hold_judgement(now: Inbox, last: Inbox, limit: int) -> str | None:
    """Why this replica must not judge any cluster's silence right now (None: it may), from its inbox at this
    sweep and at the last one.

    Silence is only evidence when this replica would have heard a heartbeat: not while its own inbox is
    backed up, not when its client dropped heartbeats since the last sweep (its inbox was full: a slow
    consumer; the backlog alone, sampled when the handler had just emptied the inbox, missed that), and not
    after its connection was lost (heartbeats sent meanwhile went nowhere)."""
    if now.reconnects != last.reconnects:
        return "health's connection to NATS was re-established"
    if now.dropped != last.dropped:
        return f"{now.dropped - last.dropped} heartbeats were dropped unheard, the inbox full (limit {limit})"
    if now.backlog >= max(1, limit // 10):
        return f"{now.backlog} heartbeats are waiting to be handled (limit {limit})"
    return None
