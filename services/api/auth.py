"""The shared request context of the API's routes: the platform they reach, who is calling, and whether
they may (every route module imports this, never ``app``)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from schemas import subjects
from schemas.api import ErrorResponse
from schemas.errors import Forbidden, NotFound, Unauthenticated
from schemas.messages import (
    AccessAction,
    Authenticate,
    Authorize,
    Decision,
    M,
    Message,
    NameRequest,
    NamesRequest,
    Presence,
    Principal,
    ProjectList,
    ProjectRecord,
    SessionsEnded,
    VisibleProjects,
)
from services.api.asking import OneAtATime
from services.bus import Bus, Telemetry

logger = logging.getLogger(__name__)

NOTICE_TIMEOUT = 1.0
"""Seconds a call that ended sessions waits to tell the other API replicas (``Platform.end_sessions``)."""

ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 410, 413, 503)
}
"""The error answers every route documents."""


@dataclass(frozen=True)
class Change:
    """What a change of access may have ended: one project's access, one user's, or (neither) anything.

    Kept sessions and decisions are forgotten whatever it says (cheap, and asked again on use); the gateway's
    open streams are checked again only where the change reaches (each check is a question to access and
    lifecycle, and a fleet may hold thousands of streams open)."""

    project: str = ""
    user: str = ""

    def reaches(self, project: str, user: str) -> bool:
        if not self.project and not self.user:
            return True
        return (bool(self.project) and self.project == project) or (bool(self.user) and self.user == user)


EVERYTHING = Change()
"""A change that may have ended anything."""


@dataclass
class Platform:
    """What the routes reach: the bus, and where agents connect."""

    bus: Bus
    nats_url: str
    request_timeout: float = 5.0
    auth_cache_ttl: float = 5.0
    """Seconds a session (a token's user) and an allowed decision are reused. A change made through this replica,
    or any change of members and roles (access announces those), forgets them at once (``forget_sessions``);
    otherwise another replica's copies expire after this long."""
    telemetry: Telemetry | None = None
    ca_file: str = ""
    """The CA agents verify a TLS NATS server with (printed in their command)."""

    def __post_init__(self) -> None:
        self._auth_cache: dict[str, tuple[float, Principal]] = {}
        self._allowed: dict[Authorize, tuple[float, Decision]] = {}
        self._forgotten = 0
        """How many times kept answers were forgotten: an answer asked for before the last time is not kept."""
        self._sessions: OneAtATime[str, Principal] = OneAtATime("session")
        self._deciding: OneAtATime[Authorize, Decision] = OneAtATime("decision")
        self.on_forget: list[Callable[[Change], None]] = []
        """Called by ``forget_sessions``: whatever else was allowed on those answers (the gateway's open streams)."""

    async def call(self, subject: str, message: Message, reply_type: type[M]) -> M:
        return await self.bus.call(subject, message, reply_type, timeout=self.request_timeout)

    async def presence(self, cluster: str) -> Presence | None:
        """Health's presence of ``cluster``; None when health has none (never connected)."""
        try:
            return await self.call(subjects.Health.PRESENCE_GET, NameRequest(name=cluster), Presence)
        except NotFound:
            return None

    @property
    def forgotten(self) -> int:
        """How many times kept answers were forgotten: read it before a question whose answer is to be kept, and
        keep the answer only if it has not moved meanwhile (the question may predate a revocation)."""
        return self._forgotten

    def forget_sessions(self, change: Change = EVERYTHING) -> None:
        """After a token, a user or a role goes away (``change`` says whose, if known): no cached answer may
        outlive it here."""
        self._auth_cache.clear()
        self._allowed.clear()
        self._sessions.forget()
        self._deciding.forget()
        self._forgotten += 1
        for listener in self.on_forget:
            listener(change)

    async def end_sessions(self, change: Change = EVERYTHING) -> None:
        """``forget_sessions`` here, and tell the other API replicas to (``subjects.API_SESSIONS_ENDED``)."""
        self.forget_sessions(change)
        notice = SessionsEnded(at=time.time(), project=change.project, user=change.user)
        try:
            async with asyncio.timeout(NOTICE_TIMEOUT):
                await self.bus.send(subjects.API_SESSIONS_ENDED, notice)
        except Exception as exc:  # a lost link, a flush that timed out: best effort, as the notice is
            # What ended has ended (access said so); other replicas' copies expire within auth_cache_ttl.
            logger.warning("could not tell the other API replicas that sessions ended: %r", exc)

    async def authenticate(self, token: str) -> Principal:
        hit = self._auth_cache.get(token)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return await self._sessions.ask(token, lambda: self._ask_session(token))

    async def _ask_session(self, token: str) -> Principal:
        now, forgotten = time.monotonic(), self._forgotten
        principal = await self.call(subjects.Access.AUTHENTICATE, Authenticate(token=token), Principal)
        if forgotten != self._forgotten:
            return principal  # asked before a revocation that came in meanwhile: answer it, never keep it
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[token] = (now + self.auth_cache_ttl, principal)
        return principal

    async def decide(self, ask: Authorize) -> Decision:
        """Access's decision on ``ask``. An allowed one is reused for ``auth_cache_ttl`` seconds, as a session is,
        so that a member's commands do not each ask access first; a change of roles made through this replica
        forgets it at once (``forget_sessions``). A refusal is never kept: a role just granted works at once."""
        hit = self._allowed.get(ask)
        if hit and hit[0] > time.monotonic():
            return hit[1]
        return await self._deciding.ask(ask, lambda: self._ask_decision(ask))

    async def _ask_decision(self, ask: Authorize) -> Decision:
        now, forgotten = time.monotonic(), self._forgotten
        decision = await self.call(subjects.Access.AUTHORIZE, ask, Decision)
        if decision.allowed and forgotten == self._forgotten:  # not asked before a change that came in meanwhile
            if len(self._allowed) > 10_000:
                self._allowed.clear()
            self._allowed[ask] = (now + self.auth_cache_ttl, decision)
        return decision


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def bearer_token(authorization: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header's value; empty when there is none."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def principal(request: Request) -> Principal:
    # The header read here rather than by FastAPI's ``HTTPBearer`` dependency: a sub-dependency solved on every
    # call was a tenth of the API's CPU per command. The document still names the scheme (``openapi.BEARER``).
    token = bearer_token(request.headers.get("authorization", ""))
    if not token:
        raise Unauthenticated("missing API token: send 'Authorization: Bearer <token>'")
    who = await platform_of(request).authenticate(token)
    request.state.user = who.user  # for the audit trail
    return who


Who = Annotated[Principal, Depends(principal)]


def require_admin(who: Principal) -> None:
    if not who.platform_admin:
        raise Forbidden(f"user {who.user!r} is not a platform admin")


async def authorize(
    platform: Platform, who: Principal, action: AccessAction, project: str = "", owner: str = ""
) -> Decision:
    """Ask access whether ``who`` may do ``action``; raise Forbidden with its reason when not."""
    if who.platform_admin:
        return Decision(allowed=True, reason="platform admin")
    decision = await platform.decide(Authorize(user=who.user, action=action, project=project, owner=owner))
    if not decision.allowed:
        raise Forbidden(decision.reason)
    return decision


async def visible(platform: Platform, who: Principal) -> VisibleProjects:
    return await platform.call(subjects.Access.VISIBLE, NameRequest(name=who.user), VisibleProjects)


async def cluster_scope(platform: Platform, who: Principal) -> list[ProjectRecord] | None:
    """The projects whose clusters (and tenants on them) ``who`` may see; None: everything (platform admin)."""
    if who.platform_admin:
        return None
    seen = await visible(platform, who)
    if seen.all:
        return None
    if not seen.projects:
        return []
    found = await platform.call(subjects.Projects.LIST, NamesRequest(names=tuple(seen.projects)), ProjectList)
    return found.projects
