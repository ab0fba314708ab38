"""What lifecycle publishes: the audit record of each command and the public workload events.

An event announces a phase the cluster reached (from its agent's result), not the command that asked for it:
the command is the audit record. So a command makes four writes (its record, its audit record, its result,
one event when the result moves the phase): a sleep says "sleeping" once the tenant sleeps, not while its
cluster may still be offline, and a wake says "ready" once it is, without a "pending" for the request.

The command itself is the desired-state record: agents follow their cluster's records (no copy is
published). Every publish carries a message id the stream deduplicates on, so a retried publish, a re-send
after a crash or a second replica folding the same result never doubles an audit record or an event.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Sequence

from opentelemetry import trace

from schemas import subjects
from schemas.audit import AuditRecord
from schemas.messages import CommandResult, EventPhase, Unseen, WorkloadEvent, WorkloadRecord, WorkloadSpec, clip
from services.bus import Bus
from services.lifecycle import logic
from services.lifecycle.metrics import Metrics

_OP_ID = re.compile(r"[0-9a-f]{32}")

MAX_CALL = 300
"""Characters of an API call line kept in an audit record."""


def new_op_id() -> str:
    return uuid.uuid4().hex


def op_id_from(given: str) -> str:
    """The API's operation id when it is one (32 hex digits, like ``new_op_id``'s), a new one otherwise: the
    API knows by the id in the answer whether the command's audit record stands for its call."""
    return given if _OP_ID.fullmatch(given) else new_op_id()


def _event(spec: WorkloadSpec, phase: EventPhase, reason: str, message: str = "") -> WorkloadEvent:
    return WorkloadEvent(
        kind=spec.kind,
        project=spec.project,
        name=spec.name,
        cluster=spec.cluster,
        phase=phase,
        at=time.time(),
        reason=reason,
        message=message,
    )


def _phase_msg_id(record: WorkloadRecord, phase: EventPhase, revision: int) -> str:
    # One per write that moved the phase: a retried publish is dropped by the stream instead of announced
    # twice, and the same phase entered again at one generation (Ready, Pending while a control plane
    # restarts, Ready again) is announced again. A second replica folding the same result loses the
    # compare-and-set, so it never announces with a revision of its own.
    spec = record.spec
    return f"{spec.kind}-{spec.project}-{spec.name}-{phase.lower()}-r{revision}"


def _deleted_msg_id(record: WorkloadRecord) -> str:
    # Generations never repeat for a name (a re-created object continues them), and the end of a generation
    # may be confirmed by a result and by an inventory: one event either way.
    spec = record.spec
    return f"{spec.kind}-{spec.project}-{spec.name}-deleted-g{record.generation}"


class Sender:
    def __init__(self, bus: Bus, metrics: Metrics) -> None:
        self.bus = bus
        self.metrics = metrics

    async def send(self, record: WorkloadRecord, op_id: str | None = None, by: str = "", call: str = "") -> None:
        """Publish the audit record of the command ``record`` is (naming the API ``call`` that issued it, if
        any); returns when the stream has it. Its message id is the operation's: a re-send after a crash or
        a retried call is not written twice."""
        span = trace.get_current_span().get_span_context()
        spec = record.spec
        op = op_id or record.op_id
        audit = AuditRecord(
            kind="command",
            at=time.time(),
            user=by or record.created_by,
            action=record.operation,
            target=f"{spec.kind}/{spec.project}/{spec.name}",
            cluster=spec.cluster,
            result="issued",
            op_id=op,
            trace_id=f"{span.trace_id:032x}" if span.is_valid else "",
            call=clip(call, MAX_CALL),
        )
        await self.bus.publish(subjects.audit_command(spec.cluster), audit, msg_id=f"audit-{op}")
        self.metrics.issued.add(spec.cluster)

    async def superseded(self, record: WorkloadRecord, ops: Sequence[Unseen], by: str) -> None:
        """Each of ``ops`` (earlier operations on ``record``'s object its cluster never saw) ends superseded by
        the operation ``by``: its audit record says so, next to the one that said it was issued (one per
        operation, the message id)."""
        spec = record.spec
        for op in ops:
            audit = AuditRecord(
                kind="command",
                at=time.time(),
                user=record.created_by,
                action=op.operation,
                target=f"{spec.kind}/{spec.project}/{spec.name}",
                cluster=spec.cluster,
                result=f"{logic.SUPERSEDED_BY}{by}",
                op_id=op.op_id,
            )
            await self.bus.publish(subjects.audit_command(spec.cluster), audit, msg_id=f"superseded-{op.op_id}")
            self.metrics.superseded.add(spec.cluster)

    async def announce(self, old: WorkloadRecord | None, new: WorkloadRecord, revision: int, reason: str = "") -> None:
        """The phase the cluster put ``new``'s object in, if it is not the one ``old`` said (``observed_phase``:
        an event says what the cluster did; what was asked is in the audit trail). ``revision`` is the write
        that stored ``new``."""
        before = logic.observed_phase(old) if old else None
        after = logic.observed_phase(new)
        if after is None or before == after:
            return
        message = new.failure.message if after == "Failed" and new.failure else ""
        event = _event(new.spec, after, reason, message)
        subject = subjects.public_event(f"{new.spec.kind}.{after.lower()}")
        await self.bus.publish(subject, event, msg_id=_phase_msg_id(new, after, revision))

    async def announce_failed(self, record: WorkloadRecord, result: CommandResult) -> None:
        """``command.failed`` for every failed command, a delete too (its phase stays Deleting, so no phase
        event says it); one per operation (the message id), however often the result is delivered."""
        reason = clip(result.reason, logic.MAX_REASON) or "ApplyFailed"
        # An agent's text: bounded before it is published for everyone.
        event = _event(record.spec, logic.phase(record), reason, clip(result.message))
        await self.bus.publish(subjects.public_event("command.failed"), event, msg_id=f"failed-{record.op_id}")

    async def announce_deleted(self, record: WorkloadRecord) -> None:
        event = _event(record.spec, "Deleted", "Deleted")
        subject = subjects.public_event(f"{record.spec.kind}.deleted")
        await self.bus.publish(subject, event, msg_id=_deleted_msg_id(record))
