"""Error kinds shared by every component.

A service raises these inside; they become a wire error ``(code, description)``
only at the edge (a NATS micro error reply or an HTTP status), and are raised
again on the calling side by the bus client, so callers can tell a permanent
failure (bad input, not found) from a retryable one (unavailable).
"""

from __future__ import annotations

import math


class TetherError(Exception):
    """Root of every error Tether raises on purpose."""

    code: str = "500"
    retryable: bool = False

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = description


class InvalidInput(TetherError):
    """The request or message is malformed or names something invalid."""

    code = "400"


class Unauthenticated(TetherError):
    """No valid credentials were presented."""

    code = "401"


class Forbidden(TetherError):
    """Valid credentials, but not allowed to do this."""

    code = "403"


class NotFound(TetherError):
    """The named object does not exist."""

    code = "404"


class Conflict(TetherError):
    """The object exists already, or changed under us, or the transition is illegal."""

    code = "409"


class Gone(TetherError):
    """A one-time thing (a connect token) was already used or has expired."""

    code = "410"


class Unavailable(TetherError):
    """A part the request needs is not reachable right now; try again."""

    code = "503"
    retryable = True


class NoResponders(Unavailable):
    """Nobody listens on the subject (NATS says so at once): the service is not running, or is starting. Unlike
    a timeout it cost the service nothing, so a caller may ask again soon (``retrying.Retries``). Never sent on
    the wire: a caller's bus client raises it."""


class NoReply(Unavailable):
    """A request went out and no answer came within its timeout. Never sent on the wire: a caller's bus client
    raises it, so a caller can tell an unanswered request from an answer that said "unavailable"."""


class Overloaded(Unavailable):
    """The service is busy (its bounded queue is full): come back after ``retry_after`` seconds.

    Told instead of queueing without bound, so that a storm of callers is admitted at the rate the service
    can serve and does not retry on a fixed schedule while its first requests still wait."""

    code = "429"

    def __init__(self, description: str, retry_after: float = 1.0) -> None:
        super().__init__(description)
        self.retry_after = retry_after


RETRY_AFTER_HEADER = "Tether-Retry-After"
"""Carries an ``Overloaded`` reply's ``retry_after`` (seconds) on the wire."""
MAX_RETRY_AFTER = 600.0
"""A retry-after read from the wire is clamped to this: a bad value must not park a caller for ever."""


def describe(exc: BaseException) -> str:
    """What an exception says, for a log line or an error's description; its type's name when it says nothing
    (``asyncio.TimeoutError`` and others have no text, and a log line ending in ": " tells nobody anything)."""
    return str(exc) or type(exc).__name__


def parse_retry_after(text: str | None, default: float = 1.0) -> float:
    """Seconds from a ``Tether-Retry-After`` value, clamped to [0, ``MAX_RETRY_AFTER``]; ``default`` when
    missing or not a number."""
    try:
        value = float(text) if text else default
    except ValueError:
        return default
    if math.isnan(value):
        return default
    return min(max(value, 0.0), MAX_RETRY_AFTER)


class Internal(TetherError):
    """A bug: the service failed in a way it did not expect."""

    code = "500"


_BY_CODE: dict[str, type[TetherError]] = {
    cls.code: cls for cls in (InvalidInput, Unauthenticated, Forbidden, NotFound, Conflict, Gone, Unavailable, Internal)
}


def from_wire(code: str, description: str, retry_after: str | None = None) -> TetherError:
    """Rebuild the error a remote service answered with (``retry_after``: its ``Tether-Retry-After``)."""
    if code == Overloaded.code:
        return Overloaded(description, parse_retry_after(retry_after))
    return _BY_CODE.get(code, Internal)(description)
