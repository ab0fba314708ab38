"""Open gateway streams end when the access that opened them does.

Kubernetes checks a request once, when it starts. Through the gateway that would let a watch, a ``logs -f``, an
exec shell or a port-forward outlive the token, the project membership or the project that allowed it, for as long
as the member keeps it open. So the gateway keeps who opened each stream (their token and the workload: a
``Holder``) and checks each distinct holder again, the way it admitted them (``Gateway.recheck``):

- at once when access ended something: a project's members or roles changed (access announces it), another API
  replica ended sessions, or this one revoked a token or removed a user, team or project
  (``Platform.forget_sessions``'s listeners). Only the holders the change reaches are checked (``Change``: a
  project's, a user's, or everyone's when it may have ended anything): each check is a question to access and
  lifecycle, and a fleet's members may hold thousands of streams open;
- every ``RECHECK_INTERVAL`` seconds otherwise, every holder: a token that expired, a notice lost on its way.

A holder refused (401, 403, 404) has its streams ended with the reason (``AccessEnded``): a tunnel's client gets
a close saying why, a watch or ``logs -f`` ends, kubectl's next request is refused with the reason, and each
ended stream is recorded (``Ended``: the gateway writes it to the audit trail). A check
that cannot be made now (a service away: 503, a timeout) keeps the streams: an outage of access must not cut every
member's shell, and the next round checks again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field

from schemas.errors import Forbidden, NotFound, Unauthenticated
from services.api.auth import EVERYTHING, Change
from services.bus.gateway import GatewayStream, StreamBroken

logger = logging.getLogger(__name__)

RECHECK_INTERVAL = 60.0
"""Seconds between two checks of every open stream's access when nothing announced a change."""
RECHECK_CONCURRENCY = 8
"""Holders checked at once: a round over thousands of open watches must not flood access and lifecycle."""


@dataclass(frozen=True)
class Holder:
    """Who opened a stream, on what: the unit a check is made for (one per token and workload)."""

    token: str = field(repr=False)  # a bearer token: never in a log line
    user: str
    target: str
    project: str
    name: str

    @property
    def where(self) -> str:
        return f"{self.target} {self.project}/{self.name}"


Ended = Callable[[Holder, GatewayStream, str, str], Awaitable[None]]
"""Told of each stream a round ended: its holder, the stream, what it was (``GET <path>``) and why. Must not raise."""


class AccessEnded(StreamBroken):
    """The member's access to the stream's workload ended while it was open."""


def ending(exc: BaseException) -> str | None:
    """Why a refused check ends its streams; None when the check only could not be made (keep them)."""
    if isinstance(exc, Unauthenticated):
        return f"the API token is no longer valid ({exc.description})"
    if isinstance(exc, Forbidden | NotFound):
        return exc.description
    return None


class OpenStreams:
    """The open streams by holder, and the rounds that check them (``run``: the API's task)."""

    def __init__(
        self, check: Callable[[Holder], Awaitable[object]], ended: Ended, interval: float = RECHECK_INTERVAL
    ) -> None:
        self._check = check
        self._ended = ended
        self.interval = interval
        self._held: dict[str, tuple[Holder, GatewayStream, str]] = {}
        self._wanted = asyncio.Event()
        self._changes: set[Change] = set()
        """What changed since the last round began (its holders are checked in the next)."""
        self.rounds = 0
        """Rounds completed (tests wait on it)."""

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, holder: Holder, stream: GatewayStream, what: str) -> None:
        """``stream`` stays open only while ``holder`` is let in; ``what`` names it (``GET <path>``)."""
        self._held[stream.id] = (holder, stream, what)

    def release(self, stream: GatewayStream) -> None:
        self._held.pop(stream.id, None)

    def recheck_soon(self, change: Change = EVERYTHING) -> None:
        """Access changed: the next round starts now, for the holders ``change`` reaches (changes asked for
        meanwhile fold into one round)."""
        self._changes.add(change)
        self._wanted.set()

    async def run(self) -> None:
        while True:
            changes: Collection[Change] | None = None  # a round on its own: every holder
            try:
                async with asyncio.timeout(self.interval):
                    await self._wanted.wait()
                changes = self._changes
            except TimeoutError:
                pass
            self._wanted.clear()
            self._changes = set()
            if self._held:
                await self.recheck(changes)
            self.rounds += 1

    async def recheck(self, changes: Collection[Change] | None = None) -> int:
        """Check once each holder one of ``changes`` reaches (None: every holder); end the streams of those
        refused. Returns how many streams ended."""
        by_holder: dict[Holder, list[tuple[GatewayStream, str]]] = {}
        for holder, stream, what in list(self._held.values()):
            if changes is None or any(c.reaches(holder.project, holder.user) for c in changes):
                by_holder.setdefault(holder, []).append((stream, what))
        gate = asyncio.Semaphore(RECHECK_CONCURRENCY)

        async def one(holder: Holder, streams: list[tuple[GatewayStream, str]]) -> int:
            async with gate:
                reason = await self._refusal(holder)
            if reason is None:
                return 0
            streams = [(s, what) for s, what in streams if s.id in self._held]  # not those closed meanwhile
            for stream, what in streams:
                text = "gateway: ended stream %s (%s) of user %r on %s: access ended: %s"
                logger.warning(text, stream.id, what, holder.user, holder.where, reason)
                self.release(stream)
                stream.fail("", AccessEnded(f"access ended: {reason}"))
            for stream, what in streams:
                try:
                    await self._ended(holder, stream, what, reason)
                except Exception:  # a record lost must not stop the rounds that end other streams
                    logger.exception("gateway: could not record the end of stream %s", stream.id)
            return len(streams)

        async with asyncio.TaskGroup() as tasks:  # ``one`` never raises: a failed check keeps the streams
            checks = [tasks.create_task(one(h, s), name=f"recheck-{h.user}") for h, s in by_holder.items()]
        return sum(c.result() for c in checks)

    async def _refusal(self, holder: Holder) -> str | None:
        try:
            await self._check(holder)
        except Exception as exc:  # every failure is judged by ``ending``; only a refusal ends streams
            reason = ending(exc)
            if reason is None:
                logger.info("gateway: could not check user %r's open streams now (%r); kept", holder.user, exc)
            return reason
        return None
