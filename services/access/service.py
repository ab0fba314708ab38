"""Access handlers and ``run``: thin glue between the bus and ``logic``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

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
    encode,
)
from schemas.names import check_name
from schemas.retrying import backoff_delay
from services import VERSION
from services.access import logic
from services.access.people import People
from services.bus import (
    Bucket,
    JetStream,
    ServiceHost,
    Telemetry,
    close,
    connect,
    ensure_bucket,
    ensure_platform_streams,
)
from services.bus.settings import ServiceSettings

logger = logging.getLogger(__name__)

PUBLISH_ATTEMPTS = 5


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    admin_token_file: Path | None = None
    """File holding the first platform admin's API token; the admin is created from it on start."""

    admin_name: str = "admin"
    """Name of the first platform admin."""

    @classmethod
    def from_env(cls) -> Settings:
        import os

        path = os.environ.get("TETHER_ADMIN_TOKEN_FILE")
        return cls(
            common=ServiceSettings.from_env(),
            admin_token_file=Path(path) if path else None,
            admin_name=os.environ.get("TETHER_ADMIN_NAME", "admin"),
        )


class Access:
    def __init__(
        self,
        js: JetStream,
        users: Bucket[UserRecord],
        tokens: Bucket[TokenRecord],
        teams: Bucket[TeamRecord],
        members: Bucket[Membership],
    ) -> None:
        self.js = js
        self.users = users
        self.tokens = tokens
        self.teams = teams
        self.members = members

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
        user = await self._user(req.name)
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
        event = encode(MembershipChanged(project=project, at=time.time()))
        headers = {"Nats-Msg-Id": f"members-{project}-{revision}"}
        for attempt in range(PUBLISH_ATTEMPTS):
            try:
                await self.js.publish(subjects.MEMBERSHIP_CHANGED, event, headers=headers)
                return
            except Exception as exc:  # a leader election answers 503; retry with the same id
                logger.warning("announcing members of %r (attempt %d): %r", project, attempt + 1, exc)
                if attempt + 1 < PUBLISH_ATTEMPTS:
                    await asyncio.sleep(backoff_delay(attempt, base=0.2, cap=2.0))
        raise Unavailable(f"members of project {project!r} were saved but the change could not be announced")

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
        # Scans every team and every membership: fine for hundreds of projects. At
        # scale, keep a per-user index (user -> projects) maintained by member_set.
        teams = logic.teams_of(user.name, (await self.teams.items()).values())
        memberships = (await self.members.items()).values()
        projects = logic.visible_projects(user.name, memberships, teams)
        return VisibleProjects(all=user.platform_admin, projects=projects)


async def run(settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None) -> None:
    telemetry = telemetry or Telemetry.create("access", settings.common.telemetry)
    nc = await connect(settings.common.bus, "access")
    try:
        js = nc.jetstream()
        replicas = settings.common.bus.replicas
        await ensure_platform_streams(js, replicas)
        users = await ensure_bucket(js, subjects.BUCKET_USERS, UserRecord, replicas=replicas, history=5)
        tokens = await ensure_bucket(js, subjects.BUCKET_TOKENS, TokenRecord, replicas=replicas)
        teams = await ensure_bucket(js, subjects.BUCKET_TEAMS, TeamRecord, replicas=replicas, history=5)
        members = await ensure_bucket(js, subjects.BUCKET_MEMBERS, Membership, replicas=replicas, history=5)
        access = Access(js, users, tokens, teams, members)
        if settings.admin_token_file is not None:
            token = settings.admin_token_file.read_text().strip()
            await access.bootstrap_admin(AdminBootstrap(name=settings.admin_name, token=token))
        host = ServiceHost(nc, "access", VERSION, telemetry.tracer(__name__))
        A = subjects.Access
        host.endpoint(A.AUTHENTICATE, Authenticate, access.authenticate)
        host.endpoint(A.USER_CREATE, UserCreate, access.user_create)
        host.endpoint(A.USER_LIST, Empty, access.user_list)
        host.endpoint(A.TEAM_CREATE, TeamCreate, access.team_create)
        host.endpoint(A.TEAM_ADD_MEMBER, TeamMemberAdd, access.team_add_member)
        host.endpoint(A.TEAM_LIST, Empty, access.team_list)
        host.endpoint(A.MEMBER_SET, MemberChange, access.member_set)
        host.endpoint(A.MEMBERS_GET, NameRequest, access.members_get)
        host.endpoint(A.AUTHORIZE, Authorize, access.authorize)
        host.endpoint(A.VISIBLE, NameRequest, access.visible)
        People(access).install(host)
        async with host:
            logger.info("access ready")
            if ready:
                ready.set()
            await asyncio.Event().wait()
    finally:
        await close(nc)
        telemetry.shutdown()
