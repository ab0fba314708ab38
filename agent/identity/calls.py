"""Requests to the platform that wait for an answer: the platform being down is not an answer.

Asked again by what the last attempt got (``schemas.retrying.Retries``): a busy platform's retry-after, soon
while nobody listens (a service restarting), a doubling backoff after a timeout.

A busy service answers at once that it is busy (its admission), so a link that says it is up and carries no
answer at all for a minute points at the link: in the 10,000-agent benchmark on a slow machine, 40 agents'
connections carried no answer for 5.5 minutes (nats-server's read loops had fallen seconds behind) until the
links dropped, all within two seconds, and each one's next request on a new connection was answered at once.
So after ``RELINK_SILENCE`` of unanswered requests in a row the connection is made again. Not sooner: in a
restart storm a request may well go unanswered once, and a reconnect costs the busy server a connect.

A request still waiting when its link is made again is asked again at once: the request, or its answer, went
with the old connection, and waiting out its timeout (30 s for a hello) only delayed the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from agent.bus import Connection, request
from schemas.errors import Internal, NoReply, NoResponders, Overloaded, TetherError, Unavailable
from schemas.messages import M, Message
from schemas.retrying import NOT_LISTENING_BACKOFF, Retries
from schemas.tasks import unless

logger = logging.getLogger(__name__)

RETRY_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between attempts of a request the platform did not answer in time."""

RELINK_SILENCE = 60.0
"""Seconds of requests in a row with no answer at all (each its whole timeout) after which the link is made
again: two of the 30 s bootstrap and hello requests, about the time nats-py's own pings (15 s, 3 outstanding)
take to find a link that carries nothing."""


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
    relink_after: float = RELINK_SILENCE,
    wake: asyncio.Event | None = None,
) -> M:
    """Request until the platform answers; Unavailable (and Internal) are asked again (``Retries``), a busy
    platform's ``Overloaded`` after the retry-after it gives (with jitter).

    Each retried failure but ``Overloaded`` is appended to ``failures`` when given. ``not_listening``: (base,
    cap) seconds between attempts nobody listens to. ``relink_after``: seconds of unanswered requests in a row
    after which the link is made again. ``wake``: set when the service says it listens now; it ends a wait
    after an attempt nobody listened to (set during that attempt, it ends the wait before it begins).
    """
    retries = Retries(RETRY_BACKOFF, not_listening)
    silent_since: float | None = None  # when the first of the unanswered requests in a row was sent
    while True:
        if wake is not None:
            wake.clear()  # a notice from here on is news for this attempt
        try:
            answer = await _answer_or_relink(conn, subject, message, reply_type, timeout)
        except (Unavailable, Internal) as exc:
            now = time.monotonic()
            silent_since = (silent_since or now - timeout) if isinstance(exc, NoReply) else None
            delay = retries.after(exc)
            _log(what, exc, retries, delay, linked=conn.is_connected)
            if failures is not None and not isinstance(exc, Overloaded):
                failures.append(exc)
            if silent_since is not None and now - silent_since >= relink_after and conn.is_connected:
                logger.warning("%s: no answer for %.0fs; connecting to NATS again", what, now - silent_since)
                silent_since = None
                await conn.force_reconnect()
            await _pause(delay, wake if isinstance(exc, NoResponders) else None)
            continue
        if answer is not None:
            return answer
        logger.info("%s: the link to NATS was made again while the answer was awaited; asking again", what)
        silent_since = None


async def _answer_or_relink(
    conn: Connection, subject: str, message: Message, reply_type: type[M], timeout: float
) -> M | None:
    """The answer; None when the link is made again before it comes."""
    asked = await unless(request(conn, subject, message, reply_type, timeout), conn.relinked())
    return asked.result() if asked is not None else None


async def _pause(delay: float, wake: asyncio.Event | None) -> None:
    """``delay`` seconds, or until ``wake`` is set."""
    if wake is None:
        await asyncio.sleep(delay)
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await wake.wait()


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
