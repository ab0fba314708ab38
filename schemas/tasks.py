"""Stopping tasks for good: cancelled again until they end, and never waited for past a deadline.

nats-py swallows a cancellation in places (its drain, its close's wait for the reconnect task), so a task that
got one cancellation there goes on as if nothing happened, and whoever waits for it waits forever: a stop
that never ends. Shared by the agent and the services."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger(__name__)

CANCEL_AGAIN = 0.5
"""Seconds between cancellations of a task that has not ended yet."""


async def cancel_and_wait(tasks: Collection[asyncio.Task[None]], timeout: float) -> None:
    """Cancel ``tasks`` and wait until they end, cancelling those still running every ``CANCEL_AGAIN``
    seconds. After ``timeout`` the rest are left running, with an error logged: a stop must end."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while running := [task for task in tasks if not task.done()]:
        left = deadline - loop.time()
        if left <= 0:
            names = ", ".join(task.get_name() for task in running)
            logger.error("while stopping: %s did not end %.1fs after being cancelled", names, timeout)
            return
        for task in running:
            task.cancel()
        await asyncio.wait(running, timeout=min(CANCEL_AGAIN, left))


async def unless(work: Coroutine[Any, Any, T], interruption: Coroutine[Any, Any, object]) -> asyncio.Future[T] | None:
    """Run ``work`` until it ends or ``interruption`` does, whichever is first: the ended work (its result or
    error), or None when interrupted. Interrupted work is cancelled and not waited for (its error, if any, is
    retrieved when it ends), so a cancellation of the caller meanwhile is never swallowed with it."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(interruption)
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            task.add_done_callback(_retrieved)
    return task if task.done() else None


def _retrieved(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
