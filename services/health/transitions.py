"""Health's transitions written beside the heartbeats, not in their path.

A transition (online, offline) is two fsynced writes: the presence record (compare-and-set) and the public
event. Written by the heartbeat handler itself, one at a time, they set how fast a fleet came online: at
10,000 agents connecting together every agent was up by 40 s while health had shown 4,938 online (115-130
transitions a second, each waiting for its writes), and a fleet going silent together (a partition) would
be shown offline at the same pace, far past the 15 s promise.

Now the handler notes the cluster's new presence in memory at once and hands the writes to ``lanes``
workers. A cluster always lands in the same lane, so its writes happen in the order they were handed over
(online before the offline that follows it, a removal's purge after both); different clusters' are written
side by side. A lane holds at most ``depth`` writes: past that the handler waits, so a stalled store slows
the heartbeats' reading instead of growing memory without bound.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import Awaitable, Callable

from schemas.tasks import cancel_and_wait

logger = logging.getLogger(__name__)

Write = Callable[[], Awaitable[None]]
"""One cluster's write (a transition, a removal's purge); it logs the store's refusals itself."""

DRAIN_TIMEOUT = 5.0
"""Seconds a stopping health gives its lanes to write what they hold; the rest is lost with the process (the
stored presence then lags, and the next replica to start judges from its own hearing)."""


def lane_of(cluster: str, lanes: int) -> int:
    """The lane of a cluster: the same in every run (``hash()`` of a str is salted per process)."""
    return zlib.crc32(cluster.encode()) % lanes


class TransitionWriter:
    """``lanes`` workers writing, each cluster's writes in order. Writes submitted before ``start()`` wait for
    it; ``stop()`` (safe to call twice) writes what is queued, within ``DRAIN_TIMEOUT``, then ends the lanes."""

    def __init__(self, lanes: int, depth: int) -> None:
        self._queues = [asyncio.Queue[tuple[str, Write]](maxsize=max(1, depth)) for _ in range(max(1, lanes))]
        self._tasks: list[asyncio.Task[None]] = []
        self.pending = 0
        """Writes submitted and not yet done."""

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._lane(queue), name=f"health-transitions-{i}")
                for i, queue in enumerate(self._queues)
            ]

    async def submit(self, cluster: str, write: Write) -> None:
        """Queue one of ``cluster``'s writes; waits only while the cluster's lane is full."""
        await self._queues[lane_of(cluster, len(self._queues))].put((cluster, write))
        self.pending += 1  # after the put: no lane runs in between, and a put cancelled while full adds nothing

    async def settled(self) -> None:
        """Until every write submitted so far is done."""
        await asyncio.gather(*(q.join() for q in self._queues))

    async def stop(self) -> None:
        if self._tasks:
            try:
                async with asyncio.timeout(DRAIN_TIMEOUT):
                    await self.settled()
            except TimeoutError:
                logger.warning("stopping: %d presence writes not done", self.pending)
        await cancel_and_wait(self._tasks, DRAIN_TIMEOUT)
        self._tasks = []

    async def _lane(self, queue: asyncio.Queue[tuple[str, Write]]) -> None:
        while True:
            cluster, write = await queue.get()
            try:
                await write()
            except asyncio.CancelledError:
                raise
            except Exception:
                # Anything the write did not expect must not end the lane (nor every cluster's writes in it).
                logger.exception("could not write the presence of %s", cluster)
            finally:
                self.pending -= 1
                queue.task_done()
