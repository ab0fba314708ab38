"""Command consumers of new clusters, made when the cluster is registered, out of its agent's connect.

Creating a consumer is the slowest JetStream request of a connect, and nats-server makes them one after the
other: ≈ 120 a second while 10,000 agents connected (513/s on an idle server), so the connect storm could go
no faster than that. An agent needs its consumer only after its hello, and a cluster is registered (``tether
cluster connect``) before its agent can connect at all, so the registry makes the consumer then, a bounded
number at a time, and the first hello trusts it without a look-up. A registration whose creation failed, or
a token issued by a registry that did not make one, creates it beside the bootstrap, as before: a bootstrap
waits for a free slot, the hello for the creation. One that this registry never saw (a restart in between)
is made by the hello's own look-up (and the agent's look-up asks for a hello when it is missing).
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
        self._made: set[str] = set()
        """Clusters whose consumer this process made at their registration and whose agent has not said its
        first hello yet. Only what this process did, so a restart forgets it (the hello then looks it up):
        at most a name per registered cluster."""

    async def at_registration(self, cluster: str) -> None:
        """Make ``cluster``'s command consumer now (a cluster just registered: its agent is not connected yet);
        a failure is logged and left to the bootstrap. Waits while ``concurrency`` creations are running."""
        self._made.discard(cluster)
        async with self._slots:
            try:
                with self._steps.timed("consumer creation (at registration)"):
                    await self._bus.ensure_agent_consumer(cluster, look_up=False)
            except Exception as exc:
                logger.warning(
                    "command consumer of %s not made at its registration (its bootstrap will): %s", cluster, exc
                )
                return
        self._made.add(cluster)

    def made_at_registration(self, cluster: str) -> bool:
        """True once when this process made ``cluster``'s consumer at its registration (then forgotten: a later
        bootstrap or hello does not trust it again, it looks it up)."""
        if cluster in self._made:
            self._made.discard(cluster)
            return True
        return False

    async def start(self, cluster: str) -> None:
        """Create ``cluster``'s command consumer in the background (replacing an earlier attempt's), unless its
        registration made it. Waits while ``concurrency`` creations are running: bootstraps do not run ahead
        of what JetStream creates, so a hello never waits behind more than one round of creations."""
        if cluster in self._made:
            return
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
        """Wait for a creation started for ``cluster``; True when its registration or its bootstrap made the
        consumer (then the first hello need not look it up: one JetStream request fewer), False when none was
        made here or it failed. Only once: a later hello looks it up itself."""
        if self.made_at_registration(cluster):
            return True
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
