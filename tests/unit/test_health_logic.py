from __future__ import annotations

import msgspec

from schemas.messages import Capacity, ClusterHealth, ControlPlaneHealth, Heartbeat
from services.health import logic

HEALTHY = ClusterHealth(nodes_ready=3, nodes_total=3, capacity=Capacity(cpu=12, memory=48 << 30))


def hb(health: ClusterHealth = HEALTHY, sent_at: float = 0.0) -> Heartbeat:
    return Heartbeat(cluster="edge-1", session="s1", seq=1, sent_at=sent_at, health=health)


def cond(presence, type_):  # type: ignore[no-untyped-def]
    return next(c for c in presence.conditions if c.type == type_)


def test_first_heartbeat_brings_a_cluster_online_on_the_platform_clock() -> None:
    # The agent's clock is far off; presence must use the platform's.
    presence, transition = logic.observe(None, hb(sent_at=5.0), now=100.0)
    assert transition == "online"
    assert presence.online and presence.last_seen == 100.0 and presence.connected_since == 100.0
    assert cond(presence, logic.LINK_UP).status == "True"
    assert cond(presence, logic.HEALTHY).status == "True"


def test_later_heartbeats_are_no_transition_and_keep_connected_since() -> None:
    first, _ = logic.observe(None, hb(), now=100.0)
    second, transition = logic.observe(first, hb(), now=105.0)
    assert transition is None
    assert second.connected_since == 100.0 and second.last_seen == 105.0
    assert cond(second, logic.LINK_UP).last_transition_time == 100.0


def test_sweep_marks_offline_only_after_the_budget() -> None:
    presence, _ = logic.observe(None, hb(), now=100.0)
    same, transition = logic.sweep(presence, now=111.9, offline_after=12.0)
    assert transition is None and same.online
    offline, transition = logic.sweep(presence, now=112.5, offline_after=12.0)
    assert transition == "offline" and not offline.online
    assert cond(offline, logic.LINK_UP).status == "False"
    assert cond(offline, logic.LINK_UP).reason == "HeartbeatMissed"
    assert cond(offline, logic.HEALTHY).status == "Unknown"
    again, transition = logic.observe(offline, hb(), now=120.0)
    assert transition == "online" and again.connected_since == 120.0


def test_link_up_and_cluster_healthy_are_separate_facts() -> None:
    sick = ClusterHealth(nodes_ready=1, nodes_total=3)
    presence, _ = logic.observe(None, hb(sick), now=1.0)
    assert presence.online
    assert cond(presence, logic.LINK_UP).status == "True"
    healthy = cond(presence, logic.HEALTHY)
    assert healthy.status == "False" and healthy.reason == "NodesNotReady" and "1/3" in healthy.message
    unreachable, _ = logic.observe(presence, hb(ClusterHealth(nodes_total=3, api_reachable=False)), now=2.0)
    assert cond(unreachable, logic.HEALTHY).reason == "APIServerUnreachable"


def test_merge_seen_only_moves_forward() -> None:
    stored, _ = logic.observe(None, hb(), now=100.0)
    mine, _ = logic.observe(stored, hb(), now=101.0)
    merged = logic.merge_seen(stored, mine)
    assert merged is not None and merged.last_seen == 101.0
    assert logic.merge_seen(mine, stored) is None


def test_a_restarted_replica_counts_silence_from_its_own_start() -> None:
    # Stored last-seen 100 (written long ago); the replica started listening at 150.
    presence, _ = logic.observe(None, hb(), now=100.0)
    same, transition = logic.sweep(presence, now=155.0, offline_after=12.0, not_before=150.0)
    assert transition is None and same.online, "offline for heartbeats the replica was not there to hear"
    offline, transition = logic.sweep(presence, now=162.5, offline_after=12.0, not_before=150.0)
    assert transition == "offline"
    assert offline.last_seen == 100.0, "last seen stays the truth"


def test_a_last_seen_time_alone_is_written_only_when_it_moved_enough() -> None:
    stored, _ = logic.observe(None, hb(), now=100.0)
    later, _ = logic.observe(stored, hb(), now=130.0)
    assert logic.merge_seen(stored, later, min_advance=60.0) is None
    much_later, _ = logic.observe(stored, hb(), now=161.0)
    merged = logic.merge_seen(stored, much_later, min_advance=60.0)
    assert merged is not None and merged.last_seen == 161.0
    # A new health report of the cluster itself is written at once, however recent the stored time.
    sick, _ = logic.observe(stored, hb(health=ClusterHealth(nodes_ready=1, nodes_total=3)), now=105.0)
    merged = logic.merge_seen(stored, sick, min_advance=60.0)
    assert merged is not None and merged.health.nodes_ready == 1


def test_only_refreshes_of_the_last_seen_time_count_against_the_allowance() -> None:
    stored, _ = logic.observe(None, hb(), now=100.0)
    later, _ = logic.observe(stored, hb(), now=161.0)
    sick, _ = logic.observe(stored, hb(health=ClusterHealth(nodes_ready=1, nodes_total=3)), now=162.0)
    assert logic.is_refresh(stored, later)
    assert not logic.is_refresh(stored, sick)
    assert not logic.is_refresh(stored, msgspec.structs.replace(later, session="another"))
    allowance = logic.Allowance(2)
    assert [allowance.take(refresh=True) for _ in range(3)] == [True, True, False]
    assert allowance.take(refresh=False), "a change of the cluster's health is never held back"
    unlimited = logic.Allowance(None)
    assert all(unlimited.take(refresh=True) for _ in range(1000))


def test_a_change_in_the_tenants_control_planes_alone_waits_like_the_last_seen_time() -> None:
    """They change with every sleep and wake: written at once, each command cost health one more KV write."""
    planes = (ControlPlaneHealth(project="p", name="t1", replicas=1, ready_replicas=1, ready=True),)
    stored, _ = logic.observe(None, hb(health=ClusterHealth(nodes_ready=3, nodes_total=3)), now=100.0)
    slept = ClusterHealth(nodes_ready=3, nodes_total=3, control_planes=planes)
    woke, _ = logic.observe(stored, hb(health=slept), now=105.0)
    assert logic.merge_seen(stored, woke, min_advance=60.0) is None
    later, _ = logic.observe(woke, hb(health=slept), now=161.0)
    merged = logic.merge_seen(stored, later, min_advance=60.0)
    assert merged is not None and merged.health.control_planes == planes, "the whole report goes with the time"
    lost_node = ClusterHealth(nodes_ready=2, nodes_total=3, control_planes=planes)
    sick, _ = logic.observe(stored, hb(health=lost_node), now=106.0)
    merged = logic.merge_seen(stored, sick, min_advance=60.0)
    assert merged is not None and merged.health == lost_node


def test_silence_of_a_cluster_not_heard_since_a_restart_counts_from_the_last_first_heartbeat() -> None:
    # Listening since 150; other clusters are still heard for the first time (the fleet reconnecting).
    assert logic.silence_counts_from(150.0, last_first_heard=0.0, hold=60.0) == 150.0
    assert logic.silence_counts_from(150.0, last_first_heard=171.0, hold=60.0) == 171.0
    # Bounded: never later than the hold after listening started.
    assert logic.silence_counts_from(150.0, last_first_heard=300.0, hold=60.0) == 210.0
    assert logic.silence_counts_from(150.0, last_first_heard=300.0, hold=0.0) == 150.0
    presence, _ = logic.observe(None, hb(), now=100.0)
    held, transition = logic.sweep(presence, now=175.0, offline_after=12.0, not_before=171.0)
    assert transition is None and held.online
    _offline, transition = logic.sweep(presence, now=183.5, offline_after=12.0, not_before=171.0)
    assert transition == "offline"
