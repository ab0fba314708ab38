"""The benchmark's per-command accounting: idle traffic subtracted, writes attributed to their writer."""

from __future__ import annotations

from collections import Counter

from schemas import subjects
from schemas.messages import WorkloadEvent, WorkloadRef, encode
from tests.bench.run import Tenant, balanced
from tests.bench.steps import summary
from tests.bench.traffic import (
    Snapshot,
    Window,
    attributed_per_command,
    difference,
    inbox_key,
    of_objects,
    per_command,
    process_of,
    render,
)


def test_connections_are_counted_by_process() -> None:
    assert process_of("tether-agent-c00012") == "agents"
    assert process_of("tether-lifecycle") == "lifecycle"
    assert process_of("tether-registry-sys") == "registry"
    assert process_of("") == "bench"
    assert inbox_key("_INBOX.abc.def") == "_INBOX.abc"
    assert inbox_key("_INBOX_c1.xyz.1") == "_INBOX_c1.xyz"


def test_idle_traffic_is_subtracted_and_divided_by_commands() -> None:
    a = Snapshot(0.0, {1: ("lifecycle", 10, 10), 2: ("agents", 0, 0)}, {"KV_desired": 5, "CMD_00": 1}, 100, 100)
    b = Snapshot(5.0, {1: ("lifecycle", 20, 20), 2: ("agents", 50, 5)}, {"KV_desired": 5, "CMD_00": 1}, 200, 300)
    c = Snapshot(
        10.0,
        {1: ("lifecycle", 330, 120), 2: ("agents", 200, 105), 3: ("api", 100, 100)},
        {"KV_desired": 25, "CMD_00": 11},
        1000,
        1500,
    )
    idle, busy = difference(a, b), difference(b, c)
    assert idle.messages["agents"] == (50, 5)
    assert busy.messages["api"] == (100, 100), "a connection that came in the window counts from zero"
    busy.writers = Counter({("lifecycle", "KV_desired"): 20, ("lifecycle", "CMD_00"): 10})
    profile = per_command(idle, busy, commands=10)
    assert profile["messages"]["lifecycle"]["published"] == 30.0
    assert profile["messages"]["agents"]["published"] == 10.0, "heartbeats of the idle window subtracted"
    assert profile["writes_per_command"] == 3.0
    assert profile["writers"]["lifecycle"] == {"KV_desired": 2.0, "CMD_00": 1.0}
    text = "\n".join(render(profile))
    assert "3.00 stream + KV writes" in text and "| lifecycle | 30.00 |" in text


def test_an_empty_window_divides_safely() -> None:
    profile = per_command(Window(seconds=0.0), Window(seconds=1.0), commands=0)
    assert profile["writes_per_command"] == 0


def test_connect_steps_summary() -> None:
    out = summary({"hello": [0.1, 0.2, 0.3]})
    assert out["hello"]["calls"] == 3 and out["hello"]["p50"] == 0.2 and out["hello"]["max"] == 0.3


def test_writes_are_attributed_to_the_commands_objects_by_subject_and_event() -> None:
    t1 = WorkloadRef(kind="tenant", project="bench", name="t1")
    t3 = WorkloadRef(kind="tenant", project="bench", name="t3")
    mine = of_objects({t1: ("c1", "sleep"), t3: ("c3", "wake")})
    event = WorkloadEvent(kind="tenant", project="bench", name="t1", cluster="c1", phase="Sleeping", at=1.0)
    woken = WorkloadEvent(kind="tenant", project="bench", name="t3", cluster="c3", phase="Ready", at=1.0)
    other = WorkloadEvent(kind="tenant", project="bench", name="t2", cluster="c1", phase="Sleeping", at=1.0)
    assert mine(f"{subjects.desired_prefix('c1')}c1.tenant.bench.t1", b"") == "sleep"
    assert mine(f"{subjects.desired_prefix('c3')}c3.tenant.bench.t3", b"") == "wake"
    assert mine(f"{subjects.desired_prefix('c1')}c1.tenant.bench.t2", b"") is None, "another object's record"
    assert mine(f"{subjects.desired_prefix('c3')}c1.tenant.bench.t1", b"") is None, "another bucket's subject"
    assert mine(subjects.evt("c1", subjects.EVT_INVENTORY), b"") is None, "inventories are background"
    assert mine(subjects.audit_command("c1"), b"") == "sleep"
    assert mine(subjects.public_event("tenant.sleeping"), encode(event)) == "sleep"
    assert mine(subjects.public_event("tenant.ready"), encode(woken)) == "wake"
    assert mine(subjects.public_event("tenant.sleeping"), encode(other)) is None
    assert mine(subjects.public_event("tenant.sleeping"), b"{not json") is None
    assert mine(subjects.public_event("tenant.sleeping"), b"[1]") is None
    assert mine(f"{subjects.desired_bucket('c1')}.x", b"") is None


def test_attributed_writes_are_counted_per_command_of_each_group() -> None:
    counted = Counter({("sleep", "AUDIT"): 2, ("sleep", "KV_d"): 4, ("wake", "AUDIT"): 2, ("wake", "EVENTS"): 4})
    out = attributed_per_command(counted, commands=4, group_sizes={"sleep": 2, "wake": 2})
    assert out["attributed"] == {"AUDIT": 1.0, "EVENTS": 1.0, "KV_d": 1.0}
    assert out["attributed_per_command"] == 3.0
    assert out["attributed_by_group"] == {
        "sleep": {"commands": 2, "writes": {"AUDIT": 1.0, "KV_d": 2.0}},
        "wake": {"commands": 2, "writes": {"AUDIT": 1.0, "EVENTS": 2.0}},
    }
    profile = per_command(Window(seconds=1.0), Window(seconds=1.0), commands=4) | out
    text = "\n".join(render(profile))
    assert "    wake (2 commands): 3.00 per command: AUDIT 1.00, EVENTS 2.00" in text


def test_attributed_writes_are_rendered_per_command() -> None:
    profile = per_command(Window(seconds=1.0), Window(seconds=1.0), commands=4)
    profile["attributed"] = {"KV_tether-desired-*": 2.0, "AUDIT": 1.0}
    profile["attributed_per_command"] = 3.0
    text = "\n".join(render(profile))
    assert "writes naming the commands' objects (counted, nothing subtracted): 3.00 per command" in text


def test_the_measured_commands_are_half_sleeps_and_half_wakes_where_the_fleet_allows() -> None:
    fleet = [Tenant(f"t{i}", "c1", "running" if i < 70 else "sleeping") for i in range(100)]
    chosen = balanced(fleet, 40)
    assert len(chosen) == 40 == len({t.name for t in chosen})
    assert sum(t.state == "running" for t in chosen) == 20
    lopsided = balanced(fleet[:75], 20)  # only 5 sleeping
    assert len(lopsided) == 20 and sum(t.state != "running" for t in lopsided) == 5
