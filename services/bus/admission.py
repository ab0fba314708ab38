"""Admission control for one endpoint: a bounded queue, and a time to come back for those it cannot take.

Without it every request became a task at once: 10,000 agents connecting to a slow platform queued
10,000 bootstraps, most of them answered after their caller's timeout, and every caller asked again, so
the queue never drained (issue 17: 0 of 10,000 agents online after 900 s on a slow 2-core machine).
Now an endpoint runs ``concurrency`` requests at a time, lets at most ``queue`` wait (and none whose wait,
estimated from the recent handling time, would pass ``max_wait``: on a slower machine fewer wait), and
answers the rest at once with ``Overloaded`` and a retry-after. The retry-afters are appointments spaced at
the rate the endpoint serves (Little's law: ``concurrency / handling time``), so a storm of N callers is
told to come back over N / rate seconds instead of all at once; callers add their own jitter on top.

While every turn is taken, the handling time is at least the age of the youngest running request, so a stall
counts while it lasts, not only once the stalled requests finish: a 10,000-agent run queued results behind a
5-second stall of its server, each admitted on the quick handling learnt before it, and each cost its agent a
whole request timeout.

An overload may start with a short limit on the appointments (``first_retry_after``) that doubles each time the
endpoint has refused for a whole limit's length, up to ``max_retry_after``: the rate at the moment of refusal
is often the slowest (a restart's first seconds), and appointments sized then left the endpoint idle later;
but a short limit held for good tells a crowd the endpoint cannot serve soon the same few seconds, again and
again. A crowd still refused after coming back is told to come back later each time, and a quiet limit's
length starts the next overload short again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from schemas.errors import Overloaded

logger = logging.getLogger(__name__)

T = TypeVar("T")

SMOOTHING = 0.1
"""Weight of the newest handling time in the moving average."""
MIN_RETRY_AFTER = 0.05
"""Seconds: never tell a caller to come back sooner (a reply costs about as much as a short handling)."""
REPORT_EVERY = 5.0
"""Seconds between log lines about refused requests (one line per period, not one per refusal)."""


@dataclass(frozen=True)
class AdmissionLimits:
    """How much one endpoint takes at once; see the module's docstring."""

    concurrency: int = 32
    """Requests handled at the same time."""
    queue: int = 512
    """Requests waiting for a turn beyond those; more are refused with a retry-after."""
    max_wait: float = 2.0
    """Seconds a request may be expected to wait in the queue; keep it well under the callers' timeout, or
    they ask again while their first request is still queued."""
    max_retry_after: float = 120.0
    """The latest appointment given: a caller is never told to come back later than this."""
    first_retry_after: float | None = None
    """The latest appointment given early in an overload; it doubles for each whole length of it the endpoint
    keeps refusing, up to ``max_retry_after``. None: ``max_retry_after`` from the start."""
    initial_handling: float = 0.05
    """Seconds one request is assumed to take until some have been handled."""

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.queue < 0 or self.max_wait <= 0 or self.max_retry_after <= 0:
            raise ValueError(f"admission limits out of range: {self}")
        if self.first_retry_after is not None and not 0 < self.first_retry_after <= self.max_retry_after:
            raise ValueError(f"admission limits out of range: {self}")


class RetryLimit:
    """The latest appointment an endpoint gives now: ``first_retry_after`` when an overload starts, doubled for
    each whole length of it the endpoint goes on refusing, up to ``max_retry_after`` (see the module)."""

    def __init__(self, limits: AdmissionLimits, clock: Callable[[], float]) -> None:
        self._first = limits.first_retry_after or limits.max_retry_after
        self._max = limits.max_retry_after
        self._clock = clock
        self.current = self._first
        self._since: float | None = None
        """When the current limit began to be given."""
        self._last = 0.0

    def refused(self) -> float:
        """The limit for an appointment given now (a refusal)."""
        now = self._clock()
        if self._since is None or now - self._last > self.current:
            self.current, self._since = self._first, now  # none refused for a whole limit: a new overload
        elif now - self._since >= self.current:
            # Refused for a whole limit's length: those told then are back and still do not fit.
            self.current, self._since = min(2.0 * self.current, self._max), now
        self._last = now
        return self.current


class Admission:
    """The bounded queue in front of one endpoint. ``run(work)`` runs it in turn or raises ``Overloaded``."""

    def __init__(self, name: str, limits: AdmissionLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.limits = limits
        self._clock = clock
        self._turns = asyncio.Semaphore(limits.concurrency)
        self._running = 0
        self._waiting = 0
        self._handling = limits.initial_handling
        self._last_start = 0.0
        self._next_slot = 0.0
        self._limit = RetryLimit(limits, clock)
        self.admitted = 0
        self.refused = 0
        self._refused_reported = 0
        self._reported_at: float | None = None

    def handling(self) -> float:
        """Seconds one request is taken to need now: the recent average, and while every turn is taken, at
        least the age of the youngest running request. Then the request that started last is still running
        (had it finished, a turn would be free, or someone would have started after it), so none has
        finished since it started: no running request can be quicker than that."""
        if self._running < self.limits.concurrency:
            return self._handling
        return max(self._handling, self._clock() - self._last_start)

    @property
    def rate(self) -> float:
        """Requests per second this endpoint serves now (Little's law over the handling time)."""
        return self.limits.concurrency / max(self.handling(), 1e-3)

    def expected_wait(self) -> float:
        """Seconds a request queued now is expected to wait for its turn."""
        return self._waiting / self.rate

    def _has_room(self) -> bool:
        if self._running + self._waiting < self.limits.concurrency:
            return True
        return self._waiting < self.limits.queue and self.expected_wait() < self.limits.max_wait

    def appointment(self) -> float:
        """Seconds until a refused caller should come back: the next free slot after everyone already told,
        spaced one handling apart at the endpoint's rate, and not before the queue has drained."""
        now = self._clock()
        limit = self._limit.refused()
        start = max(self._next_slot, now + self.expected_wait())
        self._next_slot = min(start + 1.0 / self.rate, now + limit)
        return min(max(self._next_slot - now, MIN_RETRY_AFTER), limit)

    async def run(self, work: Callable[[], Awaitable[T]]) -> T:
        """Run ``work`` when its turn comes; ``Overloaded`` (with the appointment) when there is no room."""
        if not self._has_room():
            self.refused += 1
            retry_after = self.appointment()
            self._report(retry_after)
            raise Overloaded(f"{self.name} is busy; come back in {retry_after:.1f}s", retry_after)
        self.admitted += 1
        self._waiting += 1
        try:
            await self._turns.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        started = self._last_start = self._clock()
        try:
            return await work()
        finally:
            self._running -= 1
            self._turns.release()
            took = self._clock() - started
            self._handling += SMOOTHING * (took - self._handling)

    def _report(self, retry_after: float) -> None:
        now = self._clock()
        if self._reported_at is not None and now - self._reported_at < REPORT_EVERY:
            return
        logger.warning(
            "%s: busy, refused %d request(s) since the last report (%d waiting, %d running, about %.0f/s "
            "served); told to come back within %.1fs",
            self.name,
            self.refused - self._refused_reported,
            self._waiting,
            self._running,
            self.rate,
            retry_after,
        )
        self._refused_reported, self._reported_at = self.refused, now
