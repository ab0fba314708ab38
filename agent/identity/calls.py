"""Requests to the platform that wait for an answer: the platform being down is not an answer.

Asked again by what the last attempt got (``schemas.retrying.Retries``): a busy platform's retry-after, soon
while nobody listens (a service restarting), a doubling backoff after a timeout.

A busy service answers at once that it is busy (its admission), so requests that go unanswered on a link that
says it is up, again and again, point at the link: in the 10,000-agent benchmark on a slow machine, 40 agents'
connections carried no answer for 5.5 minutes (nats-server's read loops had fallen seconds behind) until the
server dropped them as stale, and each one's next request on a new connection was answered at once. So after
``RELINK_AFTER`` unanswered requests in a row the connection is dropped and made again.
"""

from __future__ import annotations

import asyncio
import logging

from agent.bus import Connection, request
from schemas.errors import Internal, NoReply, NoResponders, Overloaded, TetherError, Unavailable
from schemas.messages import M, Message
from schemas.retrying import NOT_LISTENING_BACKOFF, Retries

logger = logging.getLogger(__name__)

RETRY_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between attempts of a request the platform did not answer in time."""

RELINK_AFTER = 2
"""Requests in a row with no answer at all (each its whole timeout) after which the link is made again."""


async def call(
    conn: Connection,
    what: str,
    subject: str,
    message: Message,
    reply_type: type[M],
    *,
    timeout: float,
    failures: list[TetherError] | None = None,
    not_listening: tuple[float, float] = NOT_LISTENING_BACKOFF,
) -> M:
    """Request until the platform answers; Unavailable (and Internal) are asked again (``Retries``), a busy
    platform's ``Overloaded`` after the retry-after it gives (with jitter).

    Each retried failure but ``Overloaded`` is appended to ``failures`` when given. ``not_listening``: (base,
    cap) seconds between attempts nobody listens to.
    """
    retries = Retries(RETRY_BACKOFF, not_listening)
    unanswered = 0
    while True:
        try:
            return await request(conn, subject, message, reply_type, timeout)
        except (Unavailable, Internal) as exc:
            unanswered = unanswered + 1 if isinstance(exc, NoReply) else 0
            delay = retries.after(exc)
            _log(what, exc, retries, delay, linked=conn.is_connected)
            if failures is not None and not isinstance(exc, Overloaded):
                failures.append(exc)
            if unanswered >= RELINK_AFTER and conn.is_connected:
                logger.warning("%s: %d requests in a row went unanswered; connecting to NATS again", what, unanswered)
                unanswered = 0
                await conn.force_reconnect()
            await asyncio.sleep(delay)


def _log(what: str, exc: Unavailable | Internal, retries: Retries, delay: float, *, linked: bool) -> None:
    if isinstance(exc, Overloaded):
        logger.info("%s: %s; the platform asks to come back in %.1fs", what, exc.description, delay)
    elif isinstance(exc, NoResponders):
        # Said once per request (every agent of a fleet says it while the platform restarts), then quietly.
        level = logging.WARNING if retries.unheard == 1 else logging.DEBUG
        logger.log(level, "%s: %s (the platform is starting?); asking again shortly", what, exc.description)
    else:
        level = logging.ERROR if isinstance(exc, Internal) else logging.WARNING
        # Whether nats-py held the link as up tells a silent link from one stuck reconnecting (the 40 stuck
        # agents of the twelfth stop's benchmark left no way to tell).
        link = "" if not isinstance(exc, NoReply) else " (link up)" if linked else " (link down)"
        logger.log(
            level, "%s (attempt %d): %s%s; retrying in %.1fs", what, retries.failures, exc.description, link, delay
        )
