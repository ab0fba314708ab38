"""Agents' results (``tether.evt.<cluster>.result``) folded into the desired state's records."""

from __future__ import annotations

import logging
import time

from schemas import subjects
from schemas.errors import Conflict, InvalidInput, Unavailable
from schemas.messages import CommandResult, WorkloadRecord, clip, workload_key
from services.bus import Delivery
from services.lifecycle import logic
from services.lifecycle.metrics import Metrics
from services.lifecycle.sending import Sender
from services.lifecycle.store import Desired, Found

logger = logging.getLogger(__name__)


class Results:
    def __init__(self, desired: Desired, sender: Sender, metrics: Metrics) -> None:
        self.desired = desired
        self.sender = sender
        self.metrics = metrics

    async def on_result(self, d: Delivery) -> None:
        result = d.decode(CommandResult)
        if subjects.cluster_of_evt(d.subject) != result.cluster:
            raise InvalidInput(f"result for {result.cluster!r} arrived on {d.subject!r}")
        k = workload_key(result)
        known = self.desired.known.get(k)
        if known is not None and await self._record(k, result, known):
            return
        found = await self.desired.get(k)
        if found is None:
            return  # an orphan's deletion, or a record already forgotten
        await self._record(k, result, found, fresh=True)

    async def _record(self, k: str, result: CommandResult, found: Found, *, fresh: bool = False) -> bool:
        """Fold ``result`` into the record; False when ``found`` is a remembered record that may be old
        (anything but a successful write on top of it): the caller reads the record and tries again."""
        record, revision = found
        problem = logic.result_problem(record, result, result.cluster)
        if problem is not None:
            if fresh:
                logger.warning("dropped result for %s from cluster %s: %s", k, result.cluster, problem)
            return fresh
        if logic.is_tombstone(record):
            return fresh  # a late copy of the deletion's result
        new, gone = logic.observe(record, result, time.time())
        new, superseded = logic.settle_earlier(new, result)
        if new is record:
            return fresh
        try:
            await self.desired.write(k, new, revision)  # a deleted object stays, as a tombstone
        except Conflict:
            if not fresh:
                return False
            # Another replica (or an action) wrote the record meanwhile: redelivered, the result is folded
            # into the new one (dropping it would leave the record out of sync until the next resync).
            raise Unavailable(f"{k} changed while a result was being recorded") from None
        # Decided on the record the write replaced (compare-and-set): the cluster applied this generation
        # without ever seeing those below it.
        await self.sender.superseded(new, superseded, by=result.op_id)
        await self._count(record, new, result)
        await self._announce(k, record, new, result, gone)
        return True

    async def _count(self, record: WorkloadRecord, new: WorkloadRecord, result: CommandResult) -> None:
        outcome = logic.result_outcome(record, result)
        if outcome == "applied":
            self.metrics.applied.add(1, {"cluster": result.cluster})
            at = logic.agent_time(result.at, time.time())
            self.metrics.latency.record(max(0.0, at - record.updated_at), {"cluster": result.cluster})
        elif outcome == "failed":
            self.metrics.failed.add(1, {"cluster": result.cluster})
            await self.sender.announce_failed(new, result)

    async def _announce(
        self, k: str, record: WorkloadRecord, new: WorkloadRecord, result: CommandResult, gone: bool
    ) -> None:
        if gone:
            logger.info("%s deleted from %s", k, result.cluster)
            await self.sender.announce_deleted(record)
            return
        reason = clip(result.reason, logic.MAX_REASON)
        if not result.ok:
            logger.warning("%s failed on %s: %s: %s", k, result.cluster, reason, clip(result.message))
        await self.sender.announce(record, new, reason or "Applied")
