"""Auto-sleep: a tenant idle past its ``sleep_after`` is put to sleep, as if its owner had asked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from schemas.errors import TetherError
from schemas.messages import WorkloadAction, WorkloadRecord, workload_key
from services.lifecycle import logic
from services.lifecycle.metrics import Metrics
from services.lifecycle.store import Desired

logger = logging.getLogger(__name__)


class AutoSleep:
    def __init__(
        self,
        desired: Desired,
        act: Callable[[WorkloadAction], Awaitable[WorkloadRecord]],
        metrics: Metrics,
        interval: float,
    ) -> None:
        self.desired = desired
        self.act = act
        self.metrics = metrics
        self.interval = interval

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.check(time.time())
            except asyncio.CancelledError:
                raise
            except TetherError as exc:
                logger.warning("auto-sleep: %s", exc.description)
            except Exception:
                logger.exception("auto-sleep failed; will retry")

    async def check(self, now: float) -> None:
        """Sleep every tenant due for it (the same scan counts what waits for its agent, for the gauge)."""
        records = await self.desired.all_records()
        self.metrics.count_pending(records)
        for record in records:
            if logic.due_for_sleep(record, now):
                logger.info("%s idle for %.0fs: sleeping it", workload_key(record.spec), now - record.last_activity)
                spec = record.spec
                await self.act(
                    WorkloadAction(kind="tenant", project=spec.project, name=spec.name, action="sleep", by="lifecycle")
                )
