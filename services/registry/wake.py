"""Telling the fleet that the registry listens: at its start, each connected cluster's agent gets a ``listening``
notice, so a hello that nobody heard is asked again at once rather than at the end of its backoff.

After a restart of the whole platform every agent is back on NATS before the registry, and its hellos go
unheard; their backoff is sized for the fleet (``logic.unheard_backoff``: 13.3 s at 10,000 agents), so the
last hellos came up to that long after the registry answered, with the registry mostly idle meanwhile
(tests/bench/RESULTS.md, issue 17). The notices go out a window at a time: at most ``window`` agents told and
not heard from yet, so the hellos come at the rate the registry answers them, never all at once. An agent
that does not answer (not connected, or of an earlier version that ignores the notice) frees its place after
``answer_wait``; one that connects later says hello by itself on its reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from schemas import subjects
from schemas.errors import describe
from schemas.messages import ControlNotice
from services.bus import Bus

logger = logging.getLogger(__name__)

WINDOW = 256
"""Agents told and not heard from yet, at most: the registry's hellos handled at once (``hello_concurrency``)."""
ANSWER_WAIT = 2.0
"""Seconds a told agent's hello is waited for before its place goes to the next one."""
NOTICE = ControlNotice(kind="listening")


class Window:
    """Which clusters to tell next: pure bookkeeping, no I/O."""

    def __init__(self, clusters: Iterable[str], size: int, answer_wait: float) -> None:
        self.waiting: deque[str] = deque(clusters)
        self.size = size
        self.answer_wait = answer_wait
        self.told: dict[str, float] = {}
        """Told and not heard from yet: when each was told."""
        self.heard: set[str] = set()
        self.sent = 0

    def hear(self, cluster: str) -> bool:
        """``cluster``'s agent said hello; True when that freed a place in the window."""
        self.heard.add(cluster)
        return self.told.pop(cluster, None) is not None

    def expire(self, now: float) -> None:
        """Give up on the told ones whose hello did not come within ``answer_wait``."""
        for cluster in [c for c, at in self.told.items() if now - at >= self.answer_wait]:
            del self.told[cluster]

    def next_batch(self, now: float) -> list[str]:
        """The clusters to tell now (none already heard from), marked told."""
        batch: list[str] = []
        while self.waiting and len(self.told) < self.size:
            cluster = self.waiting.popleft()
            if cluster in self.heard or cluster in self.told:
                continue
            self.told[cluster] = now
            batch.append(cluster)
        self.sent += len(batch)
        return batch

    def next_expiry(self, now: float) -> float:
        """Seconds until the oldest told one expires (0 when none is told)."""
        oldest = min(self.told.values(), default=now - self.answer_wait)
        return max(0.0, oldest + self.answer_wait - now)


class FleetWake:
    """Sends the ``listening`` notices once (``run``); ``heard`` is called for every hello the registry gets."""

    def __init__(
        self,
        bus: Bus,
        clusters: Callable[[], Iterable[str]],
        *,
        window: int = WINDOW,
        answer_wait: float = ANSWER_WAIT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._bus = bus
        self._clusters = clusters
        self._size = window
        self._answer_wait = answer_wait
        self._clock = clock
        self._window: Window | None = None
        self._heard_early: set[str] = set()
        self._done = False
        self._freed = asyncio.Event()

    def heard(self, cluster: str) -> None:
        if self._done:
            return
        if self._window is None:
            self._heard_early.add(cluster)  # before the run began: no notice for it
        elif self._window.hear(cluster):
            self._freed.set()

    async def run(self) -> None:
        began = self._clock()
        window = self._window = Window(self._clusters(), self._size, self._answer_wait)
        window.heard |= self._heard_early
        self._heard_early.clear()
        try:
            await self._tell(window)
        except Exception as exc:  # the bus's trouble: the agents' own backoff still brings their hellos
            logger.warning("stopped telling agents the registry listens: %s", describe(exc))
            return
        finally:
            self._done = True
            self._window = None
        logger.info(
            "told %d agent(s) the registry listens in %.1fs (%d hello(s) heard meanwhile)",
            window.sent,
            self._clock() - began,
            len(window.heard),
        )

    async def _tell(self, window: Window) -> None:
        while True:
            window.expire(self._clock())
            batch = window.next_batch(self._clock())
            if batch:
                await self._bus.send_many([(subjects.control(c), NOTICE) for c in batch])
            if not window.waiting:
                return
            self._freed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(window.next_expiry(self._clock())):
                    await self._freed.wait()
