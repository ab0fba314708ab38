"""Requests to the platform that wait for an answer: the platform being down is not an answer."""

from __future__ import annotations

import asyncio
import logging

from agent.bus import Connection, request
from schemas.errors import Internal, TetherError, Unavailable
from schemas.messages import M, Message
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

RETRY_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between attempts of a request the platform could not answer."""


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
    """Request until the platform answers; Unavailable (and Internal) are retried with backoff.

    Each retried failure is appended to ``failures`` when given.
    """
    base, cap = RETRY_BACKOFF
    attempt = 0
    while True:
        try:
            return await request(conn, subject, message, reply_type, timeout)
        except (Unavailable, Internal) as exc:
            if failures is not None:
                failures.append(exc)
            delay = backoff_delay(attempt, base=base, cap=cap)
            attempt += 1
            level = logging.ERROR if isinstance(exc, Internal) else logging.WARNING
            logger.log(level, "%s (attempt %d): %s; retrying in %.1fs", what, attempt, exc.description, delay)
            await asyncio.sleep(delay)
