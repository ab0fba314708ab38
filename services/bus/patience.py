"""A service's start-up steps, retried while the server is busy, until the start's patience runs out.

A service can start in the middle of a reconnect storm (NATS restarted with 10,000 agents): its first reads of
whole buckets and its declarations time out while the JetStream API works through every agent's requests. That
passes, only more slowly on a smaller machine; ending the process over it (its supervisor starts it again, into
the same storm) only makes the storm longer. Anything else (a refusal, a bad config, a bug) ends the start at once.

The steps of one start share one deadline (``starting``, from ``ServiceSettings.start_patience``): a start is
given so long, however its steps divide it. On one core, a restart's storm kept the JetStream API busy for
over a minute, and lifecycle's and access's declarations, each given 60 s of its own then, ended both
services (tests/bench/RESULTS.md, thirty-seventh stop)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, KeyValueError, ServiceUnavailableError

from schemas.errors import Unavailable, describe
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

T = TypeVar("T")

START_DEADLINE = 120.0
"""Seconds a step is tried again while the server is busy when it is not part of a start (``starting``)."""
REPORT_EVERY = 30.0
"""Seconds between two log lines of one step that goes on failing: its first failure is logged at once."""


@dataclass
class _Start:
    give_up: float
    """``time.monotonic()`` after which no step of this start is tried again."""
    over: bool = False
    """Set when the start ends: a task it made (a watcher, a handler) keeps the context, not the deadline."""


_start: ContextVar[_Start | None] = ContextVar("tether_start_patience", default=None)


@contextlib.contextmanager
def starting(patience: float) -> Iterator[None]:
    """The steps awaited inside (and in tasks made inside, until it ends) share ``patience`` seconds."""
    start = _Start(time.monotonic() + patience)
    token = _start.set(start)
    try:
        yield
    finally:
        start.over = True
        _start.reset(token)


def _give_up(deadline: float | None) -> float:
    now = time.monotonic()
    if deadline is not None:
        return now + deadline
    start = _start.get()
    if start is not None and not start.over:
        return start.give_up
    return now + START_DEADLINE


def busy(exc: Exception) -> bool:
    """Errors that pass once the server has caught up: a timeout, nobody answering yet, JetStream busy or
    electing its meta leader."""
    if isinstance(exc, Unavailable | TimeoutError | NatsTimeout | NoRespondersError | ServiceUnavailableError):
        return True
    # nats-py's key-value errors are APIErrors made without a code; none of them passes by waiting.
    return isinstance(exc, APIError) and not isinstance(exc, KeyValueError) and exc.code in (None, 503)


async def until_done(
    what: str,
    step: Callable[[], Awaitable[T]],
    *,
    deadline: float | None = None,
    passing: Callable[[Exception], bool] = busy,
) -> T:
    """``step()``'s result, tried again (jittered backoff up to 3 s) after an error ``passing`` calls passing,
    for ``deadline`` seconds (None: until the start's patience runs out, or ``START_DEADLINE`` outside a
    start); then, or at any other error, the error."""
    began = time.monotonic()
    give_up = _give_up(deadline)
    attempt = 0
    reported = -REPORT_EVERY
    while True:
        try:
            return await step()
        except Exception as exc:
            now = time.monotonic()
            if not passing(exc) or now > give_up:
                raise
            delay = backoff_delay(attempt, base=0.25, cap=3.0)
            attempt += 1
            if now - reported >= REPORT_EVERY:
                reported = now
                logger.warning(
                    "%s: %s; trying again in %.1fs (%d tries in %.0fs)",
                    what,
                    describe(exc),
                    delay,
                    attempt,
                    now - began,
                )
            await asyncio.sleep(delay)
