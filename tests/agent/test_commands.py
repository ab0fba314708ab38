"""The agent's command path without a bus: apply, ask lifecycle to record the result until it answers, and only
then ack."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import msgspec
import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent.commands import CommandApplier, command_of
from agent.drivers.sim import APPLY_DELAY_ENV, FAIL_ENV, UID_ENV, SimCluster, read_state
from agent.telemetry import exports_spans, tracer_provider
from schemas import subjects, tracing
from schemas.errors import InvalidInput, Overloaded, TetherError, Unavailable
from schemas.messages import (
    Command,
    CommandResult,
    DesiredState,
    Failure,
    Observed,
    ResultRecorded,
    WorkloadRecord,
    WorkloadSpec,
    encode,
)


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
    return f"{subjects.desired_prefix(spec.cluster)}{spec.cluster}.{spec.kind}.{spec.project}.{spec.name}"


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
                self.subject = f"{subjects.desired_prefix('c1')}c1.tenant.p1.t1"

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
class FakeLifecycle:
    """Records results like lifecycle's endpoint: a repeat of a result is answered "already", not recorded
    twice; ``failures`` are raised first, one per request (no answer, a busy lifecycle, a refusal)."""

    events: list[str]
    failures: list[TetherError] = field(default_factory=list)
    results: list[CommandResult] = field(default_factory=list)
    attempts: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, result: CommandResult) -> ResultRecorded:
        self.attempts.append((result.op_id, result.generation))
        if self.failures:
            raise self.failures.pop(0)
        self.events.append("record")
        if any((r.op_id, r.generation) == (result.op_id, result.generation) for r in self.results):
            return ResultRecorded(outcome="already")
        self.results.append(result)
        return ResultRecorded(outcome="recorded")


def command(generation: int = 1, state: DesiredState = "running", *, name: str = "t1", cluster: str = "c1") -> Command:
    return Command(
        op_id=f"op-{name}-{generation}",
        generation=generation,
        issued_at=1.0,
        operation="create",
        spec=WorkloadSpec(kind="tenant", project="p1", name=name, cluster=cluster, state=state, version="v1.35.0"),
    )


def setup(tmp_path: Path, **sim_kw: object) -> tuple[CommandApplier, FakeLifecycle, list[str], SimCluster]:
    events: list[str] = []
    stream = FakeLifecycle(events)
    driver = SimCluster(tmp_path, **sim_kw)  # type: ignore[arg-type]
    return CommandApplier("c1", driver, stream), stream, events, driver


async def test_apply_then_record_then_ack(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    handled = await applier.handle(FakeReceipt(record(command()), events))
    assert handled.disposition == "acked"
    assert events == ["record", "ack"]
    assert stream.attempts == [("op-t1-1", 1)]
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


async def test_redelivery_is_reported_again_and_not_applied(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    await applier.handle(FakeReceipt(record(command()), events))
    handled = await applier.handle(FakeReceipt(record(command()), events, num_delivered=2))
    assert handled.result is not None and handled.result.ok and not handled.result.applied
    assert stream.attempts == [("op-t1-1", 1), ("op-t1-1", 1)]
    assert len(stream.results) == 1  # lifecycle answered the repeat "already"
    assert events == ["record", "ack", "record", "ack"]
    assert len(read_state(tmp_path)["log"]) == 1


async def test_result_is_asked_again_until_answered_before_the_ack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.commands

    monkeypatch.setattr(agent.commands, "RECORD_BACKOFF", (0.001, 0.004))
    applier, stream, events, _ = setup(tmp_path, apply_delay=0.0)
    stream.failures = [Unavailable("no reply within 5s")] * 3 + [Overloaded("busy", retry_after=0.01)]
    receipt = FakeReceipt(record(command()), events)
    handled = await applier.handle(receipt)
    assert stream.attempts == [("op-t1-1", 1)] * 5
    assert events == ["record", "ack"] and handled.disposition == "acked"


async def test_a_lifecycle_outage_holds_the_command_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import agent.commands

    monkeypatch.setattr(agent.commands, "RECORD_BACKOFF", (0.02, 0.02))
    events: list[str] = []
    stream = FakeLifecycle(events, failures=[Unavailable("no service answers")] * 10)
    applier = CommandApplier("c1", SimCluster(tmp_path), stream, keepalive_every=0.02)
    receipt = FakeReceipt(record(command()), events)
    await applier.handle(receipt)
    assert len(stream.attempts) == 11 and events == ["record", "ack"]
    assert receipt.progress >= 3, "kept in progress while lifecycle did not answer"
    assert len(read_state(tmp_path)["log"]) == 1


async def test_a_refused_result_is_acked_not_asked_again(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path)
    stream.failures = [InvalidInput("result for tenant.p1.t1 refused: generation 1 was never sent")]
    handled = await applier.handle(FakeReceipt(record(command()), events))
    assert handled.disposition == "acked" and events == ["ack"] and len(stream.attempts) == 1


async def test_permanent_failure_is_reported_and_acked(tmp_path: Path) -> None:
    applier, stream, events, _ = setup(tmp_path, fail=["t1"])
    handled = await applier.handle(FakeReceipt(record(command()), events))
    assert handled.disposition == "acked"
    (result,) = stream.results
    assert not result.ok and not result.applied
    assert result.reason == "SimulatedFailure" and "t1" in result.message
    assert events == ["record", "ack"]


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
    assert events == ["record", "term"]
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
    stream = FakeLifecycle(events)
    driver = SimCluster(tmp_path, apply_delay=0.3)
    applier = CommandApplier("c1", driver, stream, keepalive_every=0.05)
    receipt = FakeReceipt(record(command()), events)
    await applier.handle(receipt)
    assert receipt.progress >= 3
    assert events == ["record", "ack"]


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs."""


async def test_crash_between_apply_and_result_is_repaired_by_the_redelivery(tmp_path: Path) -> None:
    events: list[str] = []

    async def dies(result: CommandResult) -> ResultRecorded:
        raise Killed

    first = CommandApplier("c1", SimCluster(tmp_path), dies)
    with pytest.raises(Killed):
        await first.handle(FakeReceipt(record(command()), events))
    assert events == []  # never acked: the server delivers it again
    assert len(read_state(tmp_path)["log"]) == 1

    # The restarted agent: a new driver on the same state, the same command delivered again.
    stream = FakeLifecycle(events)
    second = CommandApplier("c1", SimCluster(tmp_path), stream)
    handled = await second.handle(FakeReceipt(record(command()), events, num_delivered=2))
    assert handled.result is not None and handled.result.ok and not handled.result.applied
    assert stream.attempts == [("op-t1-1", 1)]
    assert events == ["record", "ack"]
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
    assert events == ["record", "ack"] and receipt.failures == 0


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
    # Lifecycle's write of the failure this agent reported: not applied again at once (each failure would be
    # tried twice); lifecycle asks again by writing the record without it.
    failed = msgspec.structs.replace(
        stored(cmd), failure=Failure(generation=3, reason="ApplyFailed", message="no", at=1.0)
    )
    assert command_of(where(cmd.spec), encode(failed), {}, "c1") is None
    older = msgspec.structs.replace(failed, failure=Failure(generation=2, reason="ApplyFailed", message="no", at=1.0))
    assert command_of(where(cmd.spec), encode(older), {}, "c1") is not None, "an older failure: apply"
    # A key deleted or purged by hand leaves a marker: no record, nothing to apply.
    for op in ("DEL", "PURGE"):
        assert command_of(where(cmd.spec), b"", {"KV-Operation": op}, "c1") is None


@pytest.mark.parametrize(
    "subject",
    [
        f"{subjects.desired_prefix('c1')}c1.tenant.p1.other",  # another object's key
        f"{subjects.desired_prefix('c1')}c1.space.p1.t1",  # another kind
        f"{subjects.desired_prefix('c2')}c2.tenant.p1.t1",  # another cluster's key
        # its own key in another cluster's bucket
        f"$KV.{subjects.DESIRED_BUCKETS[(subjects.desired_shard('c1') + 1) % subjects.DESIRED_SHARDS]}.c1.tenant.p1.t1",
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


async def test_without_an_exporter_no_span_is_made_and_the_result_carries_the_commands_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TETHER_TRACE_FILE", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    assert not exports_spans(tracer_provider("c1"))
    assert exports_spans(TracerProvider())  # made elsewhere: assumed to export
    monkeypatch.setenv("TETHER_TRACE_FILE", str(tmp_path / "spans.jsonl"))
    assert exports_spans(tracer_provider("c1"))

    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    seen: list[dict[str, str]] = []
    events: list[str] = []
    lifecycle = FakeLifecycle(events)

    async def record_result(result: CommandResult) -> ResultRecorded:
        seen.append(tracing.inject())
        return await lifecycle(result)

    applier = CommandApplier("c1", SimCluster(tmp_path), record_result, tracer=None)
    handled = await applier.handle(FakeReceipt(record(command()), events, headers={"traceparent": parent}))
    assert handled.disposition == "acked" and events == ["record", "ack"]
    assert seen == [{"traceparent": parent}]  # the API call's trace goes on at lifecycle
    assert tracing.inject() == {}  # and it was not left behind as the current context
