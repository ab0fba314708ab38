"""What only the sim driver does: its state file (read by the fault suite's history), its tombstones, its knobs.

What every driver must do (create, update, sleep, wake, delete, idempotence by generation, inventory,
health) is the driver contract suite, ``tests/drivers``, run on the sim and on a real API server."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import msgspec
import pytest

from agent.drivers import ApplyOutcome, sim_state
from agent.drivers.sim import (
    APPLY_DELAY_ENV,
    FAIL_ENV,
    UID_ENV,
    SimCluster,
    object_key,
    read_state,
)
from agent.drivers.sim_state import JOURNAL_FILE, OBJECTS_FILE
from agent.errors import ClusterUnreachable, DriverError
from schemas.messages import Command, DesiredState, Member, Resources, WorkloadKind, WorkloadSpec


@pytest.fixture(autouse=True)
def _no_env_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (UID_ENV, APPLY_DELAY_ENV, FAIL_ENV):
        monkeypatch.delenv(name, raising=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def cmd(
    generation: int,
    state: DesiredState = "running",
    *,
    name: str = "t1",
    kind: WorkloadKind = "tenant",
    project: str = "p1",
    version: str = "v1.35.0",
    op_id: str | None = None,
) -> Command:
    return Command(
        op_id=op_id or f"op-{name}-{generation}",
        generation=generation,
        issued_at=0.0,
        spec=WorkloadSpec(
            kind=kind,
            project=project,
            name=name,
            cluster="c1",
            state=state,
            version=version,
            resources=Resources(cpu=2.0, memory=1024),
            members=(Member(subject="user:ann", access="admin"),),
        ),
    )


def sim(path: Path, **kw: object) -> SimCluster:
    return SimCluster(path, clock=Clock(), **kw)  # type: ignore[arg-type]


async def test_apply_creates_and_logs(tmp_path: Path) -> None:
    s = sim(tmp_path)
    out = await s.apply(cmd(1))
    assert out == ApplyOutcome(applied=True, state="running", version="v1.35.0", generation=1)
    obj = s.get("tenant", "p1", "t1")
    assert obj is not None and obj.generation == 1 and obj.state == "running"
    assert obj.members == (Member(subject="user:ann", access="admin"),)
    assert obj.last_activity > 0
    state = read_state(tmp_path)
    assert [(e["op_id"], e["generation"], e["state"]) for e in state["log"]] == [("op-t1-1", 1, "running")]
    assert state["objects"][object_key("tenant", "p1", "t1")]["resources"] == {"cpu": 2.0, "memory": 1024}
    assert state["counters"] == {"applied": 1, "skipped": 0, "failed": 0}
    assert (tmp_path / JOURNAL_FILE).stat().st_mode & 0o777 == 0o600


async def test_sleep_keeps_activity_and_wake_is_activity(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    created = s.get("tenant", "p1", "t1")
    assert created is not None
    await s.apply(cmd(2, "sleeping"))
    asleep = s.get("tenant", "p1", "t1")
    assert asleep is not None and asleep.last_activity == created.last_activity
    await s.apply(cmd(3, "running"))
    awake = s.get("tenant", "p1", "t1")
    assert awake is not None and awake.last_activity > created.last_activity
    assert awake.created_at == created.created_at
    touched = s.touch("tenant", "p1", "t1", at=5e9)
    assert touched.last_activity == 5e9
    assert read_state(tmp_path)["objects"]["tenant/p1/t1"]["last_activity"] == 5e9


async def test_delete_leaves_a_tombstone(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    gone = await s.apply(cmd(2, "deleted"))
    assert gone == ApplyOutcome(applied=True, state="deleted", version="", generation=2)
    assert s.get("tenant", "p1", "t1") is None
    assert s.generation_of("tenant", "p1", "t1") == 2
    # A redelivered delete is not applied again, nor is the create that came before it.
    assert not (await s.apply(cmd(2, "deleted"))).applied
    assert not (await s.apply(cmd(1))).applied
    assert s.get("tenant", "p1", "t1") is None
    # A newer generation brings it back and clears the tombstone.
    assert (await s.apply(cmd(3))).applied
    state = read_state(tmp_path)
    assert "tenant/p1/t1" in state["objects"] and state["tombstones"] == {}
    assert [e["state"] for e in state["log"]] == ["running", "deleted", "running"]


async def test_kinds_and_projects_are_separate_objects(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1, name="x"))
    assert (await s.apply(cmd(1, name="x", kind="space", version=""))).applied
    assert (await s.apply(cmd(1, name="x", project="p2"))).applied
    items = await s.inventory()
    assert [(i.kind, i.project, i.name) for i in items] == [
        ("space", "p1", "x"),
        ("tenant", "p1", "x"),
        ("tenant", "p2", "x"),
    ]


async def test_state_survives_a_new_sim_on_the_same_dir(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    await s.apply(cmd(2, "sleeping"))
    await s.apply(cmd(1, name="gone"))
    await s.apply(cmd(2, "deleted", name="gone"))
    await s.close()

    again = sim(tmp_path)
    assert again.state == s.state
    assert not (await again.apply(cmd(2, "sleeping"))).applied
    assert not (await again.apply(cmd(2, "deleted", name="gone"))).applied
    assert [(i.name, i.generation, i.state) for i in await again.inventory()] == [("t1", 2, "sleeping")]
    assert len(read_state(tmp_path)["log"]) == 4
    assert read_state(tmp_path)["counters"]["skipped"] == 2


async def test_failure_knob(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(FAIL_ENV, " bad , worse")
    s = sim(tmp_path)
    assert s.fail == {"bad", "worse"}
    with pytest.raises(DriverError) as caught:
        await s.apply(cmd(1, name="bad"))
    assert caught.value.reason == "SimulatedFailure" and not caught.value.transient
    assert "TETHER_SIM_FAIL" in str(caught.value)
    assert (await s.apply(cmd(1, name="good"))).applied
    state = read_state(tmp_path)
    assert [e["name"] for e in state["log"]] == ["good"]
    assert state["counters"] == {"applied": 1, "skipped": 0, "failed": 1}
    assert s.get("tenant", "p1", "bad") is None


async def test_apply_delay_knob_and_cancel_mid_apply(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(APPLY_DELAY_ENV, "0.2")
    s = sim(tmp_path)
    assert s.apply_delay == 0.2
    task = asyncio.create_task(s.apply(cmd(1)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Cancelled before it took effect: nothing applied, nothing logged.
    assert s.get("tenant", "p1", "t1") is None and read_state(tmp_path)["log"] == []
    assert (await s.apply(cmd(1))).applied


def test_invalid_delay_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(APPLY_DELAY_ENV, "soon")
    with pytest.raises(DriverError, match="TETHER_SIM_APPLY_DELAY"):
        SimCluster(tmp_path)


async def test_unreachable_api_is_transient(tmp_path: Path) -> None:
    s = sim(tmp_path)
    s.set_api_reachable(False)
    with pytest.raises(ClusterUnreachable) as caught:
        await s.apply(cmd(1))
    assert caught.value.transient
    with pytest.raises(ClusterUnreachable):
        await s.inventory()
    with pytest.raises(ClusterUnreachable):
        await s.health()
    s.set_api_reachable(True)
    assert (await s.apply(cmd(1))).applied


async def test_damaged_state_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / OBJECTS_FILE).write_text(json.dumps({"format": 1, "objects": {"x": {"kind": "nope"}}}))
    with pytest.raises(DriverError, match="damaged"):
        SimCluster(tmp_path)
    (tmp_path / OBJECTS_FILE).write_text(json.dumps({"format": 99}))
    with pytest.raises(DriverError, match="format 99"):
        SimCluster(tmp_path)


def test_read_state_of_a_fresh_dir(tmp_path: Path) -> None:
    state = read_state(tmp_path)
    assert state["log"] == [] and state["objects"] == {} and state["counters"]["applied"] == 0
    assert not os.path.exists(tmp_path / OBJECTS_FILE)


async def test_names_with_a_slash_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DriverError) as caught:
        await sim(tmp_path).apply(cmd(1, name="a/b"))
    assert caught.value.reason == "InvalidSpec"


async def test_the_journal_is_folded_into_the_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sim_state, "JOURNAL_LIMIT", 3)
    s = sim(tmp_path)
    for generation in range(1, 6):
        assert (await s.apply(cmd(generation, "sleeping" if generation % 2 == 0 else "running"))).applied
    # Three lines, then the whole state (fourth apply) and an empty journal, then one line again.
    snapshot = json.loads((tmp_path / OBJECTS_FILE).read_text())
    assert snapshot["format"] == 2 and snapshot["journal_seq"] == 4 and len(snapshot["log"]) == 4
    assert (tmp_path / OBJECTS_FILE).stat().st_mode & 0o777 == 0o600
    assert len((tmp_path / JOURNAL_FILE).read_bytes().splitlines()) == 1
    state = read_state(tmp_path)
    assert [e["generation"] for e in state["log"]] == [1, 2, 3, 4, 5] and state["journal_seq"] == 5
    await s.close()
    assert sim(tmp_path).state == s.state


async def test_a_line_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    await s.apply(cmd(2, "sleeping"))
    await s.close()
    journal = tmp_path / JOURNAL_FILE
    whole = journal.read_bytes()
    journal.write_bytes(whole + whole.splitlines()[0][:40])  # a crash in the middle of the third write
    assert [e["generation"] for e in read_state(tmp_path)["log"]] == [1, 2]
    again = sim(tmp_path)
    assert journal.read_bytes() == whole  # cut off before anything is appended after it
    assert (await again.apply(cmd(3))).applied
    assert [e["generation"] for e in read_state(tmp_path)["log"]] == [1, 2, 3]


async def test_a_crash_between_the_snapshot_and_emptying_the_journal_replays_nothing_twice(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    await s.apply(cmd(2, "sleeping"))
    lines = (tmp_path / JOURNAL_FILE).read_bytes()
    s._store.save_whole(s.state)  # the snapshot is written ...
    await s.close()
    (tmp_path / JOURNAL_FILE).write_bytes(lines)  # ... and the journal not emptied yet
    again = sim(tmp_path)
    assert [e["generation"] for e in read_state(tmp_path)["log"]] == [1, 2]
    assert again.state.counters.applied == 2
    assert (await again.apply(cmd(3))).applied
    assert [e["generation"] for e in read_state(tmp_path)["log"]] == [1, 2, 3]


async def test_a_damaged_line_before_others_is_refused(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    await s.apply(cmd(2, "sleeping"))
    await s.close()
    _first, second = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    (tmp_path / JOURNAL_FILE).write_bytes(b'{"seq": "x"}\n' + second + b"\n")
    with pytest.raises(DriverError, match="damaged at line 1"):
        SimCluster(tmp_path)


async def test_a_format_1_state_file_is_read_and_carried_on(tmp_path: Path) -> None:
    s = sim(tmp_path)
    await s.apply(cmd(1))
    old = msgspec.to_builtins(s.state)
    del old["journal_seq"]
    await s.close()
    (tmp_path / JOURNAL_FILE).unlink()
    (tmp_path / OBJECTS_FILE).write_text(json.dumps({**old, "format": 1}))
    again = sim(tmp_path)
    assert again.generation_of("tenant", "p1", "t1") == 1
    assert (await again.apply(cmd(2, "sleeping"))).applied
    assert [e["generation"] for e in read_state(tmp_path)["log"]] == [1, 2]


async def test_a_journal_that_does_not_follow_on_from_the_snapshot_is_refused(tmp_path: Path) -> None:
    s = sim(tmp_path)
    for generation in (1, 2, 3):
        await s.apply(cmd(generation, "sleeping" if generation % 2 == 0 else "running"))
    await s.close()
    lines = (tmp_path / JOURNAL_FILE).read_bytes().splitlines()
    (tmp_path / JOURNAL_FILE).write_bytes(lines[0] + b"\n" + lines[2] + b"\n")  # the second line lost
    with pytest.raises(DriverError, match="skips from line 1 to 3"):
        SimCluster(tmp_path)
    with pytest.raises(ValueError, match="skips"):
        read_state(tmp_path)
