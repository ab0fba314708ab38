"""Access handlers and ``run``: thin glue between the bus and ``logic``."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Unpack

from schemas import subjects
from schemas.errors import Conflict, InvalidInput, NotFound, Unauthenticated, Unavailable
from schemas.messages import (
    AdminBootstrap,
    Authenticate,
    Authorize,
    Decision,
    Empty,
    MemberChange,
    Membership,
    MembershipChanged,
    NameRequest,
    Principal,
    TeamCreate,
    TeamList,
    TeamMemberAdd,
    TeamRecord,
    TokenRecord,
    UserCreate,
    UserCreated,
    UserList,
    UserRecord,
    VisibleProjects,
)
from schemas.names import check_name
from services.access import logic
from services.access.people import People
from services.bus import Bus, Endpoints, Options, Records, Runtime, View, serve, until_done
from services.bus.settings import FromEnv, ServiceSettings, env

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings(FromEnv):
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    admin_token_file: Path | None = env("TETHER_ADMIN_TOKEN_FILE", None)
    """File holding the first platform admin's API token; the admin is created from it on start."""

    admin_name: str = env("TETHER_ADMIN_NAME", "admin")
    """Name of the first platform admin."""


class Access:
    def __init__(
        self,
        bus: Bus,
        users: Records[UserRecord],
        tokens: Records[TokenRecord],
        teams: Records[TeamRecord],
        members: Records[Membership],
    ) -> None:
        self.bus = bus
        self.users = users
        self.tokens = tokens
        self.teams = teams
        self.members = members
        self.kept: tuple[View[TeamRecord], View[Membership]] | None = None
        """Every team and membership, kept in the process (``keep``) for ``visible``."""

    async def keep(self) -> None:
        """Keep every team and membership in the process (``Records.view``): ``visible``, asked on every list
        (the web UI's pages, the CLI), needs all of them, and read from the buckets each time that was two
        scans of every project's record per request."""
        self.kept = (await self.teams.view(), await self.members.view())

    async def stop(self) -> None:
        kept, self.kept = self.kept, None
        for view in kept or ():
            await view.stop()

    # --- lookups ---------------------------------------------------------------------------
    async def _user(self, name: str) -> UserRecord:
        check_name(name, "user name")
        found = await self.users.get(name)
        if found is None:
            raise NotFound(f"user {name!r} not found")
        return found[0]

    async def _team(self, name: str) -> tuple[TeamRecord, int]:
        check_name(name, "team name")
        found = await self.teams.get(name)
        if found is None:
            raise NotFound(f"team {name!r} not found")
        return found

    async def _membership(self, project: str) -> Membership | None:
        found = await self.members.get(project)
        return found[0] if found else None

    async def _teams_in(self, membership: Membership, user: str) -> set[str]:
        """The teams of ``membership`` that ``user`` belongs to (reads only the teams named there)."""
        teams = []
        for name in membership.teams:
            found = await self.teams.get(name)
            if found is not None:
                teams.append(found[0])
        return logic.teams_of(user, teams)

    # --- authentication ----------------------------------------------------------------------
    async def authenticate(self, req: Authenticate) -> Principal:
        try:
            logic.check_token_shape(req.token)
        except InvalidInput:
            raise Unauthenticated("malformed API token") from None
        found = await self.tokens.get(logic.token_hash(req.token))
        if found is None:
            raise Unauthenticated("unknown or revoked API token")
        user = await self.users.get(found[0].user)
        problem = logic.token_problem(found[0], user[0] if user else None, time.time())
        if problem or user is None:
            raise Unauthenticated(problem)
        return Principal(user=user[0].name, platform_admin=user[0].platform_admin)

    async def bootstrap_admin(self, req: AdminBootstrap) -> Principal:
        """Idempotent: make sure the admin exists and the token maps to it."""
        logic.check_token_shape(req.token)
        now = time.time()
        try:
            await self.users.create(req.name, logic.new_user(req.name, "", now, platform_admin=True))
            logger.info("created platform admin %r", req.name)
        except Conflict:
            pass
        key = logic.token_hash(req.token)
        try:
            await self.tokens.create(key, TokenRecord(user=req.name, created_at=now))
        except Conflict:
            held = await self.tokens.get(key)
            if held is not None and held[0].user != req.name:
                raise Conflict(f"this token belongs to user {held[0].user!r}, not {req.name!r}") from None
        found = await self.users.get(req.name)
        if found is None:
            # Another replica's create of it is not applied yet (see ``Bucket.create``): ask again shortly.
            raise Unavailable(f"platform admin {req.name!r} is being created by another replica")
        user = found[0]
        if not user.platform_admin:
            logger.warning("bootstrap: user %r exists but is not a platform admin", req.name)
        return Principal(user=user.name, platform_admin=user.platform_admin)

    # --- users and teams -------------------------------------------------------------------------
    async def user_create(self, req: UserCreate) -> UserCreated:
        now = time.time()
        record = logic.user_from_request(req, now)
        # The user first: a token is only ever written for a user this call created,
        # so a duplicate name can never leave a token that logs in as someone else.
        try:
            await self.users.create(record.name, record)
        except Conflict:
            raise Conflict(f"user {record.name!r} already exists") from None
        token = logic.new_token()
        await self.tokens.create(logic.token_hash(token), TokenRecord(user=record.name, created_at=now))
        logger.info("created user %r (platform admin: %s)", record.name, record.platform_admin)
        return UserCreated(user=record, token=token)

    async def user_list(self, _req: Empty) -> UserList:
        items = await self.users.items()
        return UserList(users=sorted(items.values(), key=lambda u: u.name))

    async def team_create(self, req: TeamCreate) -> TeamRecord:
        record = logic.new_team(req, time.time())
        for member in record.members:
            await self._user(member)
        try:
            await self.teams.create(record.name, record)
        except Conflict:
            raise Conflict(f"team {record.name!r} already exists") from None
        return record

    async def team_add_member(self, req: TeamMemberAdd) -> TeamRecord:
        await self._team(req.team)
        await self._user(req.user)

        def change(current: TeamRecord | None) -> TeamRecord | None:
            if current is None:
                raise NotFound(f"team {req.team!r} not found")
            return logic.add_team_member(current, req.user)

        updated = await self.teams.mutate(req.team, change)
        assert updated is not None
        # Project memberships do not change, but an owner's admin may now come from this team.
        await People(self).announce_team(req.team)
        return updated

    async def team_list(self, _req: Empty) -> TeamList:
        items = await self.teams.items()
        return TeamList(teams=sorted(items.values(), key=lambda t: t.name))

    # --- project memberships -------------------------------------------------------------------
    async def member_set(self, req: MemberChange) -> Membership:
        """Set or remove one role. The project's existence is checked by the caller (the API)."""
        logic.check_member_change(req)
        kind, name = logic.subject_of(req)
        if req.role is not None:
            await (self._user(name) if kind == "user" else self._team(name))
        try:
            await self.members.mutate(req.project, lambda current: logic.change_membership(current, req))
        except NotFound:
            # Removing someone already gone: maybe our own earlier attempt, which
            # crashed between the write and the publish. Announce the current revision.
            await self._announce_current(req.project)
            raise
        return await self._announce_current(req.project)

    async def _announce_current(self, project: str) -> Membership:
        """Announce the project's current revision, even after a no-op.

        A retry after a crash between the write and the publish must still
        announce it; the same revision gives the same Nats-Msg-Id, so it is
        deduplicated when it was already announced.
        """
        found = await self.members.get(project)
        if found is None:
            return Membership(project=project)
        await self._announce(project, found[1])
        return found[0]

    async def _announce(self, project: str, revision: int) -> None:
        # Retried through leader elections with the same id: a retry after a lost acknowledgement is dropped.
        event = MembershipChanged(project=project, at=time.time())
        await self.bus.publish(subjects.MEMBERSHIP_CHANGED, event, msg_id=f"members-{project}-{revision}")

    async def members_get(self, req: NameRequest) -> Membership:
        check_name(req.name, "project name")
        return await self._membership(req.name) or Membership(project=req.name)

    # --- authorization ---------------------------------------------------------------------------
    async def authorize(self, req: Authorize) -> Decision:
        """A decision, never an error for "denied" (only for a malformed question)."""
        logic.check_authorize(req.action, req.project)
        check_name(req.user, "user name")
        found = await self.users.get(req.user)
        if found is None:
            return Decision(allowed=False, reason=f"unknown user {req.user!r}")
        user = found[0]
        role = None
        if req.project:
            membership = await self._membership(req.project)
            if membership is not None:
                role = logic.effective_role(user.name, membership, await self._teams_in(membership, user.name))
        return logic.decide(user.platform_admin, user.name, req.action, role, req.owner, project=req.project)

    async def visible(self, req: NameRequest) -> VisibleProjects:
        user = await self._user(req.name)
        if self.kept is None:
            await self.keep()
        assert self.kept is not None
        teams_kept, members_kept = self.kept
        # A member added a moment ago, by another replica too, sees the project in the list that follows.
        await teams_kept.caught_up()
        await members_kept.caught_up()
        # Every membership still, in memory: a per-user index pays off only at many thousands of projects.
        teams = logic.teams_of(user.name, teams_kept.values())
        projects = logic.visible_projects(user.name, members_kept.values(), teams)
        return VisibleProjects(all=user.platform_admin, projects=projects)


def install(access: Access, served: Endpoints) -> None:
    A = subjects.Access
    served.platform(A.AUTHENTICATE, Authenticate, access.authenticate)
    served.platform(A.USER_CREATE, UserCreate, access.user_create)
    served.platform(A.USER_LIST, Empty, access.user_list)
    served.platform(A.TEAM_CREATE, TeamCreate, access.team_create)
    served.platform(A.TEAM_ADD_MEMBER, TeamMemberAdd, access.team_add_member)
    served.platform(A.TEAM_LIST, Empty, access.team_list)
    served.platform(A.MEMBER_SET, MemberChange, access.member_set)
    served.platform(A.MEMBERS_GET, NameRequest, access.members_get)
    served.platform(A.AUTHORIZE, Authorize, access.authorize)
    served.platform(A.VISIBLE, NameRequest, access.visible)
    People(access).install(served)


async def setup(rt: Runtime, settings: Settings) -> None:
    _, users, tokens, teams, members = await asyncio.gather(  # at once, as the registry's
        rt.bus.declare_streams("platform"),
        rt.bus.bucket(subjects.BUCKET_USERS, UserRecord, history=5),
        rt.bus.bucket(subjects.BUCKET_TOKENS, TokenRecord),
        rt.bus.bucket(subjects.BUCKET_TEAMS, TeamRecord, history=5),
        rt.bus.bucket(subjects.BUCKET_MEMBERS, Membership, history=5),
    )
    access = Access(rt.bus, users, tokens, teams, members)
    await until_done("loading teams and memberships", access.keep)
    rt.on_stop(access.stop)
    if settings.admin_token_file is not None:
        token = settings.admin_token_file.read_text().strip()
        admin = AdminBootstrap(name=settings.admin_name, token=token)
        await until_done("making the first platform admin", lambda: access.bootstrap_admin(admin))
    install(access, rt.endpoints)


async def run(settings: Settings, **options: Unpack[Options]) -> None:
    await serve("access", settings.common, functools.partial(setup, settings=settings), **options)
