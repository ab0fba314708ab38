"""Requests to the platform that wait for an answer: the platform being down is not an answer."""

from __future__ import annotations

import asyncio
import logging
import random

from agent.bus import Connection, request
from schemas.errors import Internal, Overloaded, TetherError, Unavailable
from schemas.messages import M, Message
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

RETRY_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between attempts of a request the platform could not answer."""
OVERLOAD_JITTER = 0.25
"""A busy platform's retry-after is stretched by up to this fraction, at random."""


async def call(
    conn: Connection,
    what: str,
    subject: str,
    message: Message,
    reply_type: type[M],
    *,
    timeout: float,
    failures: list[TetherError] | None = None,
) -> M:
    """Request until the platform answers; Unavailable (and Internal) are retried with backoff, a busy
    platform's ``Overloaded`` after the retry-after it gives (with jitter).

    Each retried failure is appended to ``failures`` when given.
    """
    base, cap = RETRY_BACKOFF
    attempt = 0
    while True:
        try:
            return await request(conn, subject, message, reply_type, timeout)
        except Overloaded as exc:
            # Refused before it was handled (nothing spent, so not a failure): come back when told, never
            # sooner, and a little later at random so that callers told the same time do not return together.
            delay = exc.retry_after * random.uniform(1.0, 1.0 + OVERLOAD_JITTER)
            logger.info("%s: %s; the platform asks to come back in %.1fs", what, exc.description, delay)
            await asyncio.sleep(delay)
        except (Unavailable, Internal) as exc:
            if failures is not None:
                failures.append(exc)
            delay = backoff_delay(attempt, base=base, cap=cap)
            attempt += 1
            level = logging.ERROR if isinstance(exc, Internal) else logging.WARNING
            logger.log(level, "%s (attempt %d): %s; retrying in %.1fs", what, attempt, exc.description, delay)
            await asyncio.sleep(delay)
