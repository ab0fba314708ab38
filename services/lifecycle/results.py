"""Agents' results recorded in the desired state's records: lifecycle's endpoint for ``Lifecycle.AGENT_RESULT``.

An agent asks, and acknowledges its command only once answered; the answer is sent after the record's
compare-and-set is durable (the bus's KV writes are acknowledged after fsync) and its public event is
published. Any replica may answer (one queue group); the compare-and-set makes concurrent answers safe. What
to write is decided by ``recording`` (pure); the decisions are safe to make twice, so a request asked again
after a lost answer writes nothing more.
"""

from __future__ import annotations

import logging
import time

from schemas.errors import Conflict, InvalidInput, Unavailable
from schemas.messages import CommandResult, ResultRecorded, WorkloadRecord, clip, workload_key
from services.lifecycle import logic, recording
from services.lifecycle.metrics import Metrics
from services.lifecycle.sending import Sender
from services.lifecycle.store import Desired, Found

logger = logging.getLogger(__name__)

FRESH_READS = 4
"""Reads of a record a result may take when others keep writing it meanwhile; then the agent asks again."""


class Results:
    def __init__(self, desired: Desired, sender: Sender, metrics: Metrics) -> None:
        self.desired = desired
        self.sender = sender
        self.metrics = metrics

    async def record(self, result: CommandResult, cluster: str) -> ResultRecorded:
        """Record ``result`` from ``cluster``'s agent (the cluster the broker let call: the subject's)."""
        if result.cluster != cluster:
            logger.warning("refused a result naming cluster %r from cluster %s", result.cluster, cluster)
            raise InvalidInput(f"a result for cluster {result.cluster!r} cannot come from cluster {cluster!r}")
        k = workload_key(result)
        known = self.desired.known.get(k)
        if known is not None:
            # Remembered from this replica's last write: written on top of without a read, when it is current.
            answer = await self._record(k, result, known, remembered=True)
            if answer is not None:
                return answer
        for _ in range(FRESH_READS):
            answer = await self._record(k, result, await self.desired.get(k))
            if answer is not None:
                return answer
        raise Unavailable(f"{k} kept changing while a result was being recorded; ask again")

    async def _record(
        self, k: str, result: CommandResult, found: Found | None, *, remembered: bool = False
    ) -> ResultRecorded | None:
        """The answer, or None to decide again on a fresh read (a lost compare-and-set, or a remembered record
        that asked for anything but a write: it may be old)."""
        record = found[0] if found is not None else None
        try:
            decision = recording.decide(record, result, result.cluster, time.time())
        except recording.Refused as exc:
            if remembered:
                return None
            logger.warning("refused a result for %s from cluster %s: %s", k, result.cluster, exc)
            raise InvalidInput(f"result for {k} refused: {exc}") from None
        if decision.new is None or found is None:
            if remembered:
                return None
            if decision.outcome == "unknown":
                logger.info("result for %s from cluster %s: %s", k, result.cluster, decision.detail)
            return ResultRecorded(outcome=decision.outcome, detail=decision.detail, later=decision.later)
        try:
            # A deleted object stays, as a tombstone.
            revision = await self.desired.write(k, decision.new, found[1], replaces=found[0])
        except Conflict:
            return None  # written meanwhile (an action, another replica): decided again on what is there now
        # Decided on the record the write replaced (compare-and-set): the cluster applied this generation
        # without ever seeing those below it.
        await self.sender.superseded(decision.new, decision.superseded, by=result.op_id)
        await self._count(found[0], decision.new, result)
        await self._announce(k, found[0], (decision.new, revision), result, decision.gone)
        return ResultRecorded(outcome=decision.outcome, detail=decision.detail)

    async def _count(self, record: WorkloadRecord, new: WorkloadRecord, result: CommandResult) -> None:
        outcome = logic.result_outcome(record, result)
        if outcome == "applied":
            self.metrics.applied.add(result.cluster)
            at = logic.agent_time(result.at, time.time())
            self.metrics.latency.record(max(0.0, at - record.updated_at))
        elif outcome == "failed":
            self.metrics.failed.add(result.cluster)
            await self.sender.announce_failed(new, result)

    async def _announce(
        self, k: str, record: WorkloadRecord, written: Found, result: CommandResult, gone: bool
    ) -> None:
        if gone:
            logger.info("%s deleted from %s", k, result.cluster)
            await self.sender.announce_deleted(record)
            return
        reason = clip(result.reason, logic.MAX_REASON)
        if not result.ok:
            logger.warning("%s failed on %s: %s: %s", k, result.cluster, reason, clip(result.message))
        await self.sender.announce(record, written[0], written[1], reason or "Applied")
