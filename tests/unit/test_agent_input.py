"""What an agent says is checked against what the platform knows (issue 12, data half): pure checks."""

from __future__ import annotations

import msgspec
import pytest

from schemas.errors import InvalidInput
from schemas.messages import (
    MAX_KEPT_TEXT,
    MAX_OBJECTS,
    ClusterHealth,
    CommandResult,
    ControlPlaneHealth,
    Heartbeat,
    Inventory,
    InventoryItem,
    WorkloadCreate,
    WorkloadRecord,
    clip,
    decode,
    encode,
)
from services.lifecycle import logic
from tests.unit.test_lifecycle_logic import MEMBERS, NOW, item, project, result, tenant


def raw(honest: msgspec.Struct, override: dict[str, object]) -> bytes:
    """``honest`` as JSON with some fields replaced (values an honest agent would never send)."""
    data = msgspec.to_builtins(honest)
    data.update(override)
    return msgspec.json.encode(data)


def inventory(*items: InventoryItem, cluster: str = "c1") -> Inventory:
    return Inventory(cluster=cluster, items=items, at=NOW)


# --- bounds on the wire ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "override",
    [
        {"generation": 2**70},
        {"generation": -1},
        {"at": 1e18},
        {"at": -5.0},
        {"message": "x" * 20_000},
        {"reason": "R" * 500},
        {"name": "a.b"},
        {"name": "*"},
        {"project": ">"},
        {"cluster": "x" * 64},
        {"op_id": "o" * 1000},
    ],
)
def test_results_out_of_bounds_do_not_decode(override: dict[str, object]) -> None:
    honest = result(tenant())
    assert decode(encode(honest), CommandResult) == honest
    with pytest.raises(InvalidInput):
        decode(raw(honest, override), CommandResult)


@pytest.mark.parametrize(
    "override",
    [{"generation": 2**70}, {"last_activity": 1e18}, {"name": "../etc"}, {"version": "v" * 200}],
)
def test_inventory_items_out_of_bounds_do_not_decode(override: dict[str, object]) -> None:
    data = msgspec.to_builtins(inventory(item("a")))
    data["items"][0].update(override)
    with pytest.raises(InvalidInput):
        decode(msgspec.json.encode(data), Inventory)


def test_inventory_size_is_bounded() -> None:
    most = inventory(*(item(f"t{i}") for i in range(MAX_OBJECTS)))
    assert len(decode(encode(most), Inventory).items) == MAX_OBJECTS
    with pytest.raises(InvalidInput, match="length"):
        decode(encode(inventory(*(item(f"t{i}") for i in range(MAX_OBJECTS + 1)))), Inventory)


def test_heartbeat_bounds() -> None:
    beat = Heartbeat(cluster="c1", session="s", seq=1, sent_at=NOW, health=ClusterHealth(nodes_total=1))
    assert decode(encode(beat), Heartbeat) == beat
    for override in ({"sent_at": 1e18}, {"session": "s" * 500}, {"seq": -1}, {"cluster": "C1"}):
        with pytest.raises(InvalidInput):
            decode(raw(beat, override), Heartbeat)
    planes = tuple(ControlPlaneHealth(project="p", name=f"t{i}") for i in range(MAX_OBJECTS + 1))
    flooded = Heartbeat(cluster="c1", session="s", seq=1, sent_at=NOW, health=ClusterHealth(control_planes=planes))
    with pytest.raises(InvalidInput):
        decode(encode(flooded), Heartbeat)
    huge = msgspec.to_builtins(beat)
    huge["health"]["capacity"] = {"cpu": 1e300, "memory": 2**70}
    with pytest.raises(InvalidInput):
        decode(msgspec.json.encode(huge), Heartbeat)


def test_clip() -> None:
    assert clip("short") == "short"
    cut = clip("x" * 5000)
    assert len(cut) == MAX_KEPT_TEXT and cut.endswith("\u2026")


# --- results touch only the sender's records, at generations that were sent -----------------------------------
def test_result_from_another_cluster_is_refused() -> None:
    r = tenant(cluster="c1")
    assert logic.result_problem(r, result(r), "c1") is None
    problem = logic.result_problem(r, result(r, cluster="c2"), "c2")
    assert problem is not None and "lives on cluster 'c1'" in problem


def test_result_for_a_generation_never_sent_is_refused() -> None:
    r = tenant()
    problem = logic.result_problem(r, result(r, generation=r.generation + 1), "c1")
    assert problem is not None and "never sent" in problem
    assert logic.result_problem(r, result(r, generation=r.generation - 1), "c1") is None  # late, not forged


def test_result_times_are_clamped_and_text_clipped() -> None:
    r = tenant()
    ok, _ = logic.observe(r, result(r, at=1e11), NOW)
    assert ok.observed is not None and ok.observed.at == NOW
    failed, _ = logic.observe(r, result(r, ok=False, at=4e9, reason="R" * 100, message="m" * 10_000), NOW)
    assert failed.failure is not None
    assert failed.failure.at == NOW
    assert len(failed.failure.reason) == logic.MAX_REASON
    assert len(failed.failure.message) == MAX_KEPT_TEXT
    ready = next(c for c in failed.conditions if c.type == "Ready")
    assert len(ready.message) <= MAX_KEPT_TEXT


# --- inventories: activity only of the sender's records, clamped ------------------------------------------------
def test_activity_only_for_own_records_and_never_in_the_future() -> None:
    mine, theirs = tenant("a", cluster="c1"), tenant("b", cluster="c2")
    items = [
        InventoryItem(kind="tenant", project="p1", name="a", generation=1, state="running", last_activity=4e9),
        InventoryItem(kind="tenant", project="p1", name="b", generation=1, state="running", last_activity=NOW + 5),
    ]
    desired_on_c1 = [r for r in (mine, theirs) if r.spec.cluster == "c1"]
    later = NOW + 10
    assert logic.activity_updates(desired_on_c1, items, later) == {"tenant.p1.a": later}


def test_touch_clamps_to_now_and_never_goes_back() -> None:
    r, _ = logic.observe(tenant(), result(tenant()), NOW)
    touched = logic.touch(r, 1e18, NOW + 3)
    assert touched is not None and touched.last_activity == NOW + 3
    assert logic.touch(r, NOW - 100, NOW + 3) is None


def test_activity_within_the_resolution_of_the_recorded_one_is_not_written() -> None:
    """The apply of a create, reported milliseconds after the create recorded its own activity, is no news."""
    r, _ = logic.observe(tenant(), result(tenant()), NOW)
    just_after = r.last_activity + logic.ACTIVITY_RESOLUTION / 100
    assert logic.touch(r, just_after, NOW + 60) is None
    item = InventoryItem(kind="tenant", project="p1", name="t1", generation=1, state="running", last_activity=0.0)
    assert logic.activity_updates([r], [msgspec.structs.replace(item, last_activity=just_after)], NOW + 60) == {}
    later = r.last_activity + logic.ACTIVITY_RESOLUTION
    touched = logic.touch(r, later, NOW + 60)
    assert touched is not None and touched.last_activity == later
    assert logic.activity_updates([r], [msgspec.structs.replace(item, last_activity=later)], NOW + 60) == {
        logic.workload_key(r.spec): later
    }


def test_touch_leaves_a_record_that_waits_for_its_cluster_alone() -> None:
    """Activity written into a record whose generation is not applied yet would be a copy of the command at
    a later position of the stream (``logic.asks``): left for the next inventory."""
    assert logic.asks(tenant())
    assert logic.touch(tenant(), NOW + 1, NOW + 3) is None


# --- amplification ------------------------------------------------------------------------------------------
def test_unknown_objects_cause_bounded_deletes_each_once() -> None:
    unknown = [item(f"x{i}") for i in range(MAX_OBJECTS)]
    plan = logic.reconcile([tenant("keep")], unknown + unknown[:10], empty_since=None, now=NOW, grace=600)
    assert len(plan.orphans) == logic.MAX_ORPHAN_DELETES
    assert len({i.name for i in plan.orphans}) == len(plan.orphans)  # each object at most once
    assert plan.deferred == MAX_OBJECTS - logic.MAX_ORPHAN_DELETES + 0  # the keep record is resent, not deferred
    assert [r.spec.name for r in plan.resend] == ["keep"]


def test_resends_are_bounded() -> None:
    records = [tenant(f"t{i}") for i in range(30)]
    plan = logic.reconcile(records, [], empty_since=None, now=NOW, grace=600, max_resends=10, max_orphans=5)
    assert len(plan.resend) == 10 and plan.deferred == 20


def test_inventory_claiming_a_future_generation_does_not_count_as_applied() -> None:
    r = tenant()
    plan = logic.reconcile([r], [item("t1", generation=2**40)], empty_since=None, now=NOW, grace=600)
    assert plan.resend == [] and plan.orphans == []  # nothing to do; and nothing records the claim
    assert not logic.in_sync(r)


def test_new_record_for_cluster() -> None:
    # A sanity anchor for the helpers above: records are placed where the caller says.
    req = WorkloadCreate(kind="space", project="p1", name="s1")
    rec: WorkloadRecord = logic.new_record(req, project(), "c9", MEMBERS, NOW, "op")
    assert rec.spec.cluster == "c9"


# --- listings never fail on stored data ------------------------------------------------------------------
def test_views_survive_absurd_stored_values() -> None:
    from services.api import logic as api_logic

    stored = msgspec.structs.replace(tenant(), last_activity=1e18, generation=2**70, created_at=float("nan"))
    view = api_logic.workload_view(stored)
    assert view.last_activity is None and view.created_at is None
    assert view.desired.generation == 2**70
    assert api_logic.ts(-1) is None and api_logic.ts(0) is None and api_logic.ts(NOW) is not None


# --- heartbeat floods ----------------------------------------------------------------------------------------
def test_rate_limiter_cuts_one_cluster_not_another() -> None:
    from schemas.ratelimit import RateLimiter

    limiter = RateLimiter(rate=10, burst=20)
    t = 100.0
    flood = sum(limiter.allow("tether.hb.a", t + i / 50_000) for i in range(50_000))  # 50k in one second
    assert 20 <= flood <= 31  # the burst, plus what a second refills
    assert limiter.allow("tether.hb.b", t + 0.5)  # another cluster is untouched
    assert limiter.take_dropped() == {"tether.hb.a": 50_000 - flood}
    assert limiter.take_dropped() == {}
    assert limiter.allow("tether.hb.a", t + 10)  # refilled after the flood


def test_rate_limiter_lets_honest_agents_through() -> None:
    from schemas.ratelimit import RateLimiter

    limiter = RateLimiter(rate=10, burst=50)
    assert all(limiter.allow(f"tether.hb.c{i % 100}", 100.0 + i * 0.005) for i in range(2_000))


def test_rate_limiter_memory_is_bounded() -> None:
    from schemas.ratelimit import RateLimiter

    limiter = RateLimiter(rate=1, burst=1, max_clusters=10)
    for i in range(100):
        assert limiter.allow(f"s{i}", 0.0)
    assert len(limiter._tokens) <= 10


def test_hold_judgement_when_health_itself_could_not_hear() -> None:
    from services.health.logic import Inbox, hold_judgement

    quiet = Inbox(backlog=0, dropped=5, reconnects=2)
    assert hold_judgement(quiet, quiet, 200_000) is None
    assert hold_judgement(quiet._replace(backlog=19_999), quiet, 200_000) is None
    backlog = hold_judgement(quiet._replace(backlog=20_000), quiet, 200_000)
    assert backlog is not None and "waiting" in backlog
    reconnected = hold_judgement(quiet._replace(reconnects=3), quiet, 200_000)
    assert reconnected is not None and "re-established" in reconnected
    # Dropped since the last sweep, the inbox emptied again by now: still not evidence.
    dropped = hold_judgement(quiet._replace(dropped=8), quiet, 200_000)
    assert dropped is not None and "3 heartbeats were dropped" in dropped


def test_result_for_an_operation_never_sent_is_refused() -> None:
    r = tenant()
    assert logic.result_problem(r, result(r), "c1") is None  # the record's own operation
    assert logic.result_problem(r, result(r, op_id=f"{logic.RESYNC_PREFIX}7-tenant.p1.t1-1"), "c1") is None
    forged = logic.result_problem(r, result(r, op_id="made-up"), "c1")
    assert forged is not None and "never sent" in forged
    # An older generation's result is judged by observe (late, ignored), whatever its id.
    newer = logic.act(r, "sleep", "", "op-2", NOW)
    assert newer is not None
    assert logic.result_problem(newer, result(r, op_id="older-op"), "c1") is None
