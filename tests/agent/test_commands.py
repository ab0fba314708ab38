"""The agent's command path without a bus: apply, report with a stable id, and only then ack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest

from agent.commands import CommandApplier, command_of, result_msg_id
from agent.drivers.sim import APPLY_DELAY_ENV, FAIL_ENV, UID_ENV, SimCluster, read_state
from schemas import subjects
from schemas.errors import InvalidInput, Unavailable
from schemas.messages import (
    Command,
    CommandResult,
    DesiredState,
    Observed,
    WorkloadRecord,
    WorkloadSpec,
    encode,
)

SUBJECT = "tether.evt.c1.result"


@pytest.fixture(autouse=True)
def _no_env_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (UID_ENV, APPLY_DELAY_ENV, FAIL_ENV):
        monkeypatch.delenv(name, raising=False)


def stored(cmd: Command, observed: int | None = None) -> WorkloadRecord:
    """The desired-state record a command is (what the agent's consumer delivers)."""
    seen = Observed(generation=observed, state=cmd.spec.state, at=1.0) if observed is not None else None
    return WorkloadRecord(
        spec=cmd.spec, generation=cmd.generation, op_id=cmd.op_id, operation=cmd.operation, observed=seen
    )


def record(cmd: Command, observed: int | None = None) -> bytes:
    return encode(stored(cmd, observed))


def where(spec: WorkloadSpec) -> str:
    return f"{subjects.DESIRED_PREFIX}{spec.cluster}.{spec.kind}.{spec.project}.{spec.name}"


@dataclass
class FakeReceipt:
    data: bytes
    events: list[str]
    subject: str = ""
    num_delivered: int = 1
    nak_delay: float | None = None
    progress: int = 0
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.subject:  # where the record is stored, or any subject of this cluster for garbage
            try:
                self.subject = where(msgspec.json.decode(self.data, type=WorkloadRecord).spec)
            except msgspec.MsgspecError:
                self.subject = f"{subjects.DESIRED_PREFIX}c1.tenant.p1.t1"

    async def ack(self) -> None:
        self.events.append("ack")

    async def nak(self, delay: float | None = None) -> None:
        self.nak_delay = delay
        self.events.append("nak")

    async def term(self) -> None:
        self.events.append("term")

    async def in_progress(self) -> None:
        self.progress += 1


@dataclass
class FakeStream:
    """Publishes into a list, dropping duplicate ids like a stream's duplicate window."""

    events: list[str]
    fail_times: int = 0
    results: list[CommandResult] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    attempts: list[str] = field(default_factory=list)

    async def __call__(self, subject: str, result: CommandResult, msg_id: str) -> None:
        assert subject == SUBJECT
        self.attempts.append(msg_id)
        if self.fail_times:
            self.fail_times -= 1
            raise Unavailable("JetStream is unavailable (503)")
        self.events.append("publish")
        if msg_id not in self.ids:
            self.ids.append(msg_id)
            self.results.append(result)


def command(generation: int = 1, state: DesiredState = "running", *, name: str = "t1", cluster: str = "c1") -> Command:
    return Command(
        op_id=f"op-{name}-{generation}",
        generation=generation,
        issued_at=1.0,
        operation="create",
        spec=WorkloadSpec(kind="tenant", project="p1", name=name, cluster=cluster, state=state, version="v1.35.0"),
    )


def setup(tmp_path: Path, **sim_kw: object) -> tuple[CommandApplier, FakeStream, list[str], SimCluster]:
    events: list[str] = []
    stream = FakeStream(events)
    driver = SimCluster(tmp_path, **sim_kw)  # type: ignore[arg-type]
    return CommandApplier("c1", driver, stream, result_subject=SUBJECT), stream, events, driver


async def test_apply_then_publish_then_ack(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    handled = await applier.handle(FakeReceipt(record(command()), events))
    assert handled.disposition == "acked"
    assert events == ["publish", "ack"]
    assert stream.ids == [result_msg_id("op-t1-1", 1)] == ["result-op-t1-1-1"]
    (result,) = stream.results
    assert (result.ok, result.applied, result.state, result.version, result.cluster) == (
        True,
        True,
        "running",
        "v1.35.0",
        "c1",
    )
    assert (result.kind, result.project, result.name, result.generation) == ("tenant", "p1", "t1", 1)
    assert applier.applied == 1


async def test_redelivery_is_reported_again_with_the_same_id_and_not_applied(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    await applier.handle(FakeReceipt(record(command()), events))
    handled = await applier.handle(FakeReceipt(record(command()), events, num_delivered=2))
    assert handled.result is not None and handled.result.ok and not handled.result.applied
    assert stream.attempts == ["result-op-t1-1-1", "result-op-t1-1-1"]
    assert len(stream.results) == 1  # the stream dropped the copy
    assert events == ["publish", "ack", "publish", "ack"]
    assert len(read_state(tmp_path)["log"]) == 1


async def test_result_is_retried_with_the_same_id_before_the_ack(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    stream.fail_times = 3
    await applier.handle(FakeReceipt(record(command()), events))
    assert stream.attempts == ["result-op-t1-1-1"] * 4
    assert events == ["publish", "ack"]


async def test_permanent_failure_is_reported_and_acked(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path, fail=["t1"])
    handled = await applier.handle(FakeReceipt(record(command()), events))
    assert handled.disposition == "acked"
    (result,) = stream.results
    assert not result.ok and not result.applied
    assert result.reason == "SimulatedFailure" and "t1" in result.message
    assert events == ["publish", "ack"]


async def test_unreachable_cluster_naks_with_backoff(tmp_path: Path) -> None:
    applier, stream, events, driver = setup(tmp_path)
    driver.set_api_reachable(False)
    receipt = FakeReceipt(record(command()), events, num_delivered=4)
    handled = await applier.handle(receipt)
    assert handled.disposition == "nacked"
    assert events == ["nak"] and stream.attempts == []
    assert receipt.nak_delay is not None and 4.0 <= receipt.nak_delay <= 8.0


async def test_garbage_is_terminated_without_a_result(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    handled = await applier.handle(FakeReceipt(b"{not json", events))
    assert handled.disposition == "terminated" and handled.result is None
    assert events == ["term"] and stream.attempts == []


async def test_invalid_but_attributable_command_is_reported_then_terminated(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    raw = (
        b'{"type":"workload-record.v1","op_id":"op-9","generation":3,"operation":"create",'
        b'"spec":{"kind":"tenant","project":"p1","name":"t9","cluster":"c1","state":"exploded"}}'
    )
    handled = await applier.handle(FakeReceipt(raw, events))
    assert handled.disposition == "terminated"
    (result,) = stream.results
    assert (result.op_id, result.generation, result.name, result.ok, result.reason) == (
        "op-9",
        3,
        "t9",
        False,
        "InvalidCommand",
    )
    assert "state" in result.message
    assert events == ["publish", "term"]
    assert read_state(tmp_path)["log"] == []


@pytest.mark.parametrize(
    ("cmd", "problem"),
    [
        (command(cluster="c2"), "arrived on"),
        (command(generation=0), "generation must be at least 1"),
        (command(name="Bad_Name"), "name 'Bad_Name'"),
    ],
)
async def test_commands_this_agent_cannot_apply(tmp_path: Path, cmd: Command, problem: str) -> None:
    applier, stream, events, _ = setup(tmp_path)
    handled = await applier.handle(FakeReceipt(record(cmd), events))
    assert handled.disposition == "terminated"
    (result,) = stream.results
    assert result.reason == "InvalidCommand" and problem in result.message
    assert read_state(tmp_path)["log"] == []


async def test_slow_apply_keeps_the_command_alive(tmp_path: Path) -> None:
    events: list[str] = []
    stream = FakeStream(events)
    driver = SimCluster(tmp_path, apply_delay=0.3)
    applier = CommandApplier("c1", driver, stream, result_subject=SUBJECT, keepalive_every=0.05)
    receipt = FakeReceipt(record(command()), events)
    await applier.handle(receipt)
    assert receipt.progress >= 3
    assert events == ["publish", "ack"]


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


async def test_crash_between_apply_and_result_is_repaired_by_the_redelivery(tmp_path: Path) -> None:
    events: list[str] = []

    async def dies(subject: str, result: CommandResult, msg_id: str) -> None:
        raise Killed

    first = CommandApplier("c1", SimCluster(tmp_path), dies, result_subject=SUBJECT)
    with pytest.raises(Killed):
        await first.handle(FakeReceipt(record(command()), events))
    assert events == []  # never acked: the server delivers it again
    assert len(read_state(tmp_path)["log"]) == 1

    # The restarted agent: a new driver on the same state, the same command delivered again.
    stream = FakeStream(events)
    second = CommandApplier("c1", SimCluster(tmp_path), stream, result_subject=SUBJECT)
    handled = await second.handle(FakeReceipt(record(command()), events, num_delivered=2))
    assert handled.result is not None and handled.result.ok and not handled.result.applied
    assert stream.ids == ["result-op-t1-1-1"]
    assert events == ["publish", "ack"]
    assert len(read_state(tmp_path)["log"]) == 1


async def test_an_ack_lost_in_a_failover_is_tried_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agent.commands

    monkeypatch.setattr(agent.commands, "ACK_BACKOFF", (0.001, 0.001))
    applier, _stream, events, _driver = setup(tmp_path)

    @dataclass
    class FlakyAck(FakeReceipt):
        failures: int = 2

        async def ack(self) -> None:
            if self.failures:
                self.failures -= 1
                raise Unavailable("cannot ack command 16: nats: no responders available for request")
            await super().ack()

    receipt = FlakyAck(record(command()), events)
    handled = await applier.handle(receipt)
    assert handled.disposition == "acked"
    assert events == ["publish", "ack"] and receipt.failures == 0


def test_a_record_is_a_command_until_it_is_observed_at_its_generation() -> None:
    cmd = command(generation=3)
    assert command_of(where(cmd.spec), record(cmd), {}, "c1") == msgspec.structs.replace(cmd, issued_at=0.0)
    assert command_of(where(cmd.spec), record(cmd, observed=2), {}, "c1") is not None, "an older result: apply"
    # Lifecycle's write of the result this agent reported (or a tombstone): nothing new to apply.
    assert command_of(where(cmd.spec), record(cmd, observed=3), {}, "c1") is None
    gone = command(generation=4, state="deleted")
    assert command_of(where(gone.spec), record(gone, observed=4), {}, "c1") is None
    deleting = command_of(where(gone.spec), record(gone), {}, "c1")
    assert deleting is not None and deleting.spec.state == "deleted"
    # A key deleted or purged by hand leaves a marker: no record, nothing to apply.
    for op in ("DEL", "PURGE"):
        assert command_of(where(cmd.spec), b"", {"KV-Operation": op}, "c1") is None


@pytest.mark.parametrize(
    "subject",
    [
        f"{subjects.DESIRED_PREFIX}c1.tenant.p1.other",  # another object's key
        f"{subjects.DESIRED_PREFIX}c1.space.p1.t1",  # another kind
        f"{subjects.DESIRED_PREFIX}c2.tenant.p1.t1",  # another cluster's key
    ],
)
def test_a_record_not_stored_where_it_says_is_refused(subject: str) -> None:
    with pytest.raises(InvalidInput):
        command_of(subject, record(command()), {}, "c1")
    with pytest.raises(InvalidInput):
        command_of(where(command(cluster="c2").spec), record(command(cluster="c2")), {}, "c1")


async def test_lifecycles_write_of_the_result_is_acked_without_the_driver(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    handled = await applier.handle(FakeReceipt(record(command(), observed=1), events))
    assert handled.disposition == "skipped" and events == ["ack"] and stream.attempts == []
    assert read_state(tmp_path)["log"] == []
