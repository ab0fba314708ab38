"""Command consumers of newly bootstrapped clusters, created beside the bootstrap instead of inside it.

Creating a consumer on a work-queue stream is the slowest JetStream request of a connect (nats-server
checks it against every other consumer of the stream; 150-160 ms of a 210 ms bootstrap at 1,000 agents
connecting). The agent needs it only after its hello, which comes after a second NATS connect, so the
registry answers the bootstrap once the token is spent and creates the consumer meanwhile, a bounded
number at a time (a bootstrap waits for a free slot); the hello waits for it. A creation that failed, or
one a restarted registry never started, is made by the hello's own look-up (and the agent's look-up asks
for a hello when it is missing).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.bus import Bus
from services.registry.steps import Steps

logger = logging.getLogger(__name__)


class NewConsumers:
    def __init__(self, bus: Bus, concurrency: int, steps: Steps | None = None) -> None:
        self._bus = bus
        self._steps = steps or Steps()
        self._slots = asyncio.Semaphore(max(1, concurrency))
        self._creating: dict[str, asyncio.Task[None]] = {}

    async def start(self, cluster: str) -> None:
        """Create ``cluster``'s command consumer in the background (replacing an earlier attempt's). Waits
        while ``concurrency`` creations are running: bootstraps do not run ahead of what JetStream creates,
        so a hello never waits behind more than one round of creations."""
        old = self._creating.pop(cluster, None)
        if old is not None:
            old.cancel()
        await self._slots.acquire()
        try:
            task = asyncio.create_task(self._create(cluster), name=f"consumer-{cluster}")
        except BaseException:
            self._slots.release()
            raise
        self._creating[cluster] = task

    async def _create(self, cluster: str) -> None:
        try:
            with self._steps.timed("consumer creation (beside the bootstrap)"):
                await self._bus.ensure_agent_consumer(cluster, look_up=False)
        finally:
            self._slots.release()

    async def settled(self, cluster: str) -> bool:
        """Wait for a creation started for ``cluster``; True when it made the consumer (then the hello
        need not look it up: one JetStream request fewer), False when none was started or it failed."""
        task = self._creating.pop(cluster, None)
        if task is None:
            return False
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # the waiter was cancelled, not the creation
            return False
        except Exception as exc:
            logger.warning("command consumer of %s not created at its bootstrap (its hello makes it): %s", cluster, exc)
            return False
        return True

    async def close(self) -> None:
        """Stop creations still running (each agent's hello creates what is missing)."""
        tasks = list(self._creating.values())
        self._creating.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
