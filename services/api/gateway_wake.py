"""Wake on use: a member's request to a sleeping tenant cluster wakes it, then waits (bounded) until it is Ready.

As vCluster Platform does, using a sleeping instance is enough to wake it: the gateway asks lifecycle's own
``wake`` action (the path ``tether tenant wake`` takes, as the member), then waits for the record to turn
Ready. A request that waited ``WAKE_WAIT`` seconds is answered 503 with ``Retry-After`` and the reason (the
phase and the Ready condition's reason), which kubectl retries by itself. Requests arriving meanwhile share one
waiter per tenant: a burst of kubectl discovery calls costs one wake and one poll loop, not one each.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable

from schemas.messages import WorkloadAction, WorkloadRecord, WorkloadRef

WAKE_WAIT = float(os.environ.get("TETHER_GATEWAY_WAKE_WAIT", "20"))
"""Seconds a request waits for a wake before it is answered 503 with Retry-After."""
RETRY_AFTER = 5
"""Seconds kubectl is told to wait before it asks again while the tenant wakes."""
POLL = 0.5
"""Seconds between reads of the record while waiting (one reader per tenant)."""

Wake = Callable[[WorkloadAction], Awaitable[WorkloadRecord]]
Read = Callable[[WorkloadRef], Awaitable[WorkloadRecord]]


class NotAwake(Exception):
    """The tenant did not turn Ready in time, or cannot: why, and when to ask again (None: do not)."""

    def __init__(self, message: str, retry_after: int | None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def asleep(record: WorkloadRecord) -> bool:
    return record.spec.state == "sleeping"


def waking(record: WorkloadRecord) -> bool:
    """Woken (by anyone) and not Ready yet: a request waits rather than reach a control plane still starting."""
    return record.spec.state == "running" and record.operation == "wake" and record.phase != "Ready"


def why(record: WorkloadRecord) -> str:
    ready = next((c for c in record.conditions if c.type == "Ready"), None)
    detail = f": {ready.reason}" + (f" ({ready.message})" if ready.message else "") if ready and ready.reason else ""
    return f"phase {record.phase}{detail}"


class Waker:
    """One wake-and-wait per tenant at a time, shared by every request that finds it asleep."""

    def __init__(self, wake: Wake, read: Read, wait: float = WAKE_WAIT) -> None:
        self._wake = wake
        self._read = read
        self._wait = wait
        self._waits: dict[tuple[str, str, str], asyncio.Task[WorkloadRecord]] = {}
        self._last: dict[tuple[str, str, str], WorkloadRecord] = {}

    async def ready(self, record: WorkloadRecord, user: str) -> WorkloadRecord:
        """``record`` once Ready, woken first if it sleeps (as ``user``); NotAwake after the bound."""
        spec = record.spec
        key = (spec.kind, spec.project, spec.name)
        task = self._waits.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._wake_and_wait(record, user))
            self._waits[key] = task
            task.add_done_callback(lambda done: self._forget(key, done))
        try:
            return await asyncio.wait_for(asyncio.shield(task), self._wait)
        except TimeoutError:
            last = self._last.get(key, record)
            what = f"{spec.kind} {spec.project}/{spec.name}"
            raise NotAwake(f"{what} is waking up and not Ready yet ({why(last)})", RETRY_AFTER) from None

    def _forget(self, key: tuple[str, str, str], done: asyncio.Task[WorkloadRecord]) -> None:
        self._waits.pop(key, None)
        self._last.pop(key, None)
        if not done.cancelled():
            done.exception()  # retrieved: every request that waited for it may have timed out already

    async def _wake_and_wait(self, record: WorkloadRecord, user: str) -> WorkloadRecord:
        spec = record.spec
        key = (spec.kind, spec.project, spec.name)
        what = f"{spec.kind} {spec.project}/{spec.name}"
        if asleep(record):
            action = WorkloadAction(kind=spec.kind, project=spec.project, name=spec.name, action="wake", by=user)
            record = await self._wake(action)
        # The waiter outlives no request by much: a later request starts a new one (waking is idempotent).
        deadline = time.monotonic() + self._wait + 1
        ref = WorkloadRef(kind=spec.kind, project=spec.project, name=spec.name)
        while True:
            self._last[key] = record
            if record.phase == "Ready":
                return record
            if record.phase == "Failed" or record.spec.state == "deleted":
                raise NotAwake(f"{what} cannot be reached ({why(record)})", None)
            if asleep(record):
                raise NotAwake(f"{what} was put back to sleep", None)
            if time.monotonic() > deadline:
                raise NotAwake(f"{what} is waking up and not Ready yet ({why(record)})", RETRY_AFTER)
            await asyncio.sleep(POLL)
            record = await self._read(ref)
