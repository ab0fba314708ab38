"""Reporting workloads that settle after their command was applied.

A tenant cluster's control plane becomes Ready (or says why it does not) seconds to minutes after the
agent applied its objects, and a deleted namespace is gone only once everything in it is. A driver that
knows this (``StatusReporting``) is asked again every few seconds; each change is published as one more
result of the workload's last command (``applied`` False, ``settled`` and ``reason`` saying where it is),
so lifecycle's phase follows the cluster: Ready only when the control plane is, Deleting until it is gone.

Each is a request to lifecycle to record it, like a command's own result (one attempt per look: what got no
answer is asked at the next look; lifecycle answers a repeated one without writing it again). Pure of ``nats``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from agent.commands import RecordOnce
from agent.drivers import StatusReporting, WorkloadStatus
from schemas.errors import TetherError, Unavailable
from schemas.messages import MAX_KEPT_TEXT, MAX_SHORT, CommandResult, WorkloadRef, clip, ref_of

logger = logging.getLogger(__name__)

Key = WorkloadRef


def _same(a: WorkloadStatus, b: WorkloadStatus) -> bool:
    """Equal for reporting (a reason's message alone changing, e.g. a scheduler's counts, is not news)."""
    return (a.op_id, a.generation, a.state, a.settled, a.reason, a.version) == (
        b.op_id,
        b.generation,
        b.state,
        b.settled,
        b.reason,
        b.version,
    )


class StatusReporter:
    """Asks lifecycle to record what changed in a driver's workload statuses since the last look."""

    def __init__(
        self,
        cluster: str,
        driver: StatusReporting,
        record: RecordOnce,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cluster = cluster
        self.driver = driver
        self._record = record
        self._clock = clock
        self._said: dict[Key, WorkloadStatus] = {}
        """What the platform last heard about each workload (from this reporter or the command path)."""

    def note(self, result: CommandResult) -> None:
        """The command path reported ``result``: that is what the platform heard last."""
        if not result.ok:
            return
        self._said[ref_of(result)] = WorkloadStatus(
            kind=result.kind,
            project=result.project,
            name=result.name,
            op_id=result.op_id,
            generation=result.generation,
            state=result.state,
            settled=result.settled,
            reason=result.reason,
            message=result.message,
            version=result.version,
        )

    async def check(self) -> list[CommandResult]:
        """Look once and report every change; what got no answer is asked again at the next look."""
        published = []
        for status in await self._changes():
            result = self._result(status)
            try:
                await self._record(result)
            except Unavailable as exc:
                logger.info("status of %s not recorded yet: %s", ref_of(status), exc.description)
                continue
            except TetherError as exc:
                # Refused (asking again would get the same answer): the platform has heard it.
                logger.warning("status of %s refused by the platform: %s", ref_of(status), exc.description)
            published.append(result)
            self._said_now(status)
        return published

    async def _changes(self) -> list[WorkloadStatus]:
        """What differs from what the platform last heard; a workload gone after its delete is reported gone."""
        found = {ref_of(s): s for s in await self.driver.statuses() if s.generation > 0 and s.op_id}
        changes = [s for key, s in found.items() if key not in self._said or not _same(self._said[key], s)]
        for key in self._said.keys() - found.keys():
            last = self._said[key]
            if last.state == "deleted":
                # Reported while it terminated, listed no more: it is gone.
                changes.append(
                    WorkloadStatus(
                        kind=last.kind,
                        project=last.project,
                        name=last.name,
                        op_id=last.op_id,
                        generation=last.generation,
                        state="deleted",
                        settled=True,
                    )
                )
            else:
                del self._said[key]  # removed by someone else: the inventory's resync deals with it
        return changes

    def _said_now(self, status: WorkloadStatus) -> None:
        key = ref_of(status)
        if status.state == "deleted" and status.settled:
            self._said.pop(key, None)
        else:
            self._said[key] = status
        logger.info(
            "%s: %s%s",
            key,
            "settled" if status.settled else "not settled",
            f" ({status.reason}: {status.message})" if status.reason else "",
        )

    def _result(self, status: WorkloadStatus) -> CommandResult:
        return CommandResult(
            op_id=status.op_id,
            cluster=self.cluster,
            kind=status.kind,
            project=status.project,
            name=status.name,
            generation=status.generation,
            ok=True,
            applied=False,
            state=status.state,
            version=status.version,
            # Within the platform's bounds (schemas.messages): a longer one would be refused whole.
            reason=clip(status.reason, MAX_SHORT),
            message=clip(status.message, MAX_KEPT_TEXT),
            settled=status.settled,
            at=self._clock(),
        )
