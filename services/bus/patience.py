"""A service's start-up steps, retried while the server is busy, until a deadline.

A service can start in the middle of a reconnect storm (NATS restarted with 10,000 agents): its first reads of
whole buckets and its declarations time out while the JetStream API works through every agent's requests. That
passes within a minute; ending the process over it (its supervisor starts it again, into the same storm) only
makes the storm longer. Anything else (a refusal, a bad config, a bug) ends the start at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import APIError, KeyValueError, ServiceUnavailableError

from schemas.errors import Unavailable, describe
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

T = TypeVar("T")

START_DEADLINE = 120.0
"""Seconds a start-up step is tried again while the server is busy (a 10,000-agent reconnect storm on two cores
lasted ~35 s)."""


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
    deadline: float = START_DEADLINE,
    passing: Callable[[Exception], bool] = busy,
) -> T:
    """``step()``'s result, tried again (jittered backoff up to 3 s) after an error ``passing`` calls passing,
    until ``deadline`` seconds have gone by; then, or at any other error, the error."""
    give_up = time.monotonic() + deadline
    attempt = 0
    while True:
        try:
            return await step()
        except Exception as exc:
            if not passing(exc) or time.monotonic() > give_up:
                raise
            delay = backoff_delay(attempt, base=0.25, cap=3.0)
            attempt += 1
            logger.warning("%s: %s; trying again in %.1fs", what, describe(exc), delay)
            await asyncio.sleep(delay)
