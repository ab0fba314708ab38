"""Access's day-two endpoints: delete and disable users, a user's API tokens, team removals.

Kept apart from ``service`` (creation and checks) so each stays small; both work on the same buckets.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.changes import (
    Removed,
    TeamMemberRemove,
    TokenCreate,
    TokenCreated,
    TokenInfo,
    TokenList,
    TokenRef,
    UserDisable,
)
from schemas.errors import Conflict, NotFound
from schemas.messages import Membership, MembershipChanged, NameRequest, TeamRecord, TokenRecord, UserRecord
from schemas.names import check_name
from services.access import logic
from services.bus import Endpoints

if TYPE_CHECKING:
    from services.access.service import Access

logger = logging.getLogger(__name__)


def _info(key: str, record: TokenRecord) -> TokenInfo:
    return TokenInfo(
        id=logic.token_id(key),
        user=record.user,
        name=record.name,
        created_at=record.created_at,
        expires_at=record.expires_at,
    )


class People:
    """Removals and tokens. Every removal purges the key (no history left behind) and says what it took."""

    def __init__(self, access: Access) -> None:
        self.access = access

    # --- tokens ---------------------------------------------------------------------------------
    async def _tokens_of(self, user: str) -> dict[str, TokenRecord]:
        items = await self.access.tokens.items()
        return {key: record for key, record in items.items() if record.user == user}

    async def token_list(self, req: NameRequest) -> TokenList:
        await self.access._user(req.name)
        tokens = await self._tokens_of(req.name)
        infos = [_info(k, r) for k, r in tokens.items()]
        return TokenList(tokens=sorted(infos, key=lambda t: (t.created_at, t.id)))

    async def token_create(self, req: TokenCreate) -> TokenCreated:
        await self.access._user(req.user)
        record = logic.new_token_record(req.user, req.name, req.ttl, time.time())
        if len(await self._tokens_of(req.user)) >= logic.MAX_TOKENS_PER_USER:
            raise Conflict(f"user {req.user!r} has {logic.MAX_TOKENS_PER_USER} tokens already: revoke one first")
        token = logic.new_token()
        key = logic.token_hash(token)
        await self.access.tokens.create(key, record)
        logger.info("API token %s created for %r", logic.token_id(key), req.user)
        return TokenCreated(info=_info(key, record), token=token)

    async def _find(self, ref: TokenRef) -> tuple[str, TokenRecord]:
        check_name(ref.user, "user name")
        logic.check_token_id(ref.id)
        for key, record in (await self._tokens_of(ref.user)).items():
            if logic.token_id(key) == ref.id:
                return key, record
        raise NotFound(f"user {ref.user!r} has no token {ref.id!r}")

    async def token_revoke(self, ref: TokenRef) -> Removed:
        key, _ = await self._find(ref)
        await self.access.tokens.purge(key)
        logger.info("API token %s of %r revoked", ref.id, ref.user)
        return Removed(kind="token", name=ref.id)

    async def token_rotate(self, ref: TokenRef) -> TokenCreated:
        """A new token with the old one's name and lifetime; the old one stops working now."""
        key, old = await self._find(ref)
        ttl = max(old.expires_at - old.created_at, 0.0) if old.expires_at else 0.0
        created = await self.token_create(TokenCreate(user=ref.user, name=old.name, ttl=ttl))
        await self.access.tokens.purge(key)
        logger.info("API token %s of %r rotated to %s", ref.id, ref.user, created.info.id)
        return created

    # --- users ------------------------------------------------------------------------------------
    async def _check_not_last_admin(self, user: UserRecord) -> None:
        if not user.platform_admin:
            return
        users = (await self.access.users.items()).values()
        if logic.other_enabled_admins(users, user.name) == 0:
            raise Conflict(f"user {user.name!r} is the last enabled platform admin; make another one first")

    async def user_disable(self, req: UserDisable) -> UserRecord:
        user = await self.access._user(req.name)
        if req.disabled:
            await self._check_not_last_admin(user)

        def change(current: UserRecord | None) -> UserRecord | None:
            if current is None:
                raise NotFound(f"user {req.name!r} not found")
            if current.disabled == req.disabled:
                return None
            return UserRecord(
                name=current.name,
                email=current.email,
                platform_admin=current.platform_admin,
                created_at=current.created_at,
                disabled=req.disabled,
            )

        updated = await self.access.users.mutate(req.name, change)
        assert updated is not None
        logger.info("user %r %s", req.name, "disabled" if req.disabled else "enabled")
        return updated

    async def user_delete(self, req: NameRequest) -> Removed:
        """The user, their tokens, their team places and project roles (their tenants stay, with the project)."""
        user = await self.access._user(req.name)
        await self._check_not_last_admin(user)
        took: list[str] = []
        # Tokens first: from here on the user cannot log in, whatever else fails.
        for key in await self._tokens_of(user.name):
            await self.access.tokens.purge(key)
            took.append(f"token {logic.token_id(key)}")
        for team in (await self.access.teams.items()).values():
            if user.name in team.members:
                await self.team_remove_member(TeamMemberRemove(team=team.name, user=user.name))
                took.append(f"member of team {team.name}")
        took += await self._leave_projects("user", user.name)
        await self.access.users.purge(user.name)
        logger.info("user %r deleted (%s)", user.name, ", ".join(took) or "nothing else")
        return Removed(kind="user", name=user.name, took=tuple(took))

    async def _leave_projects(self, kind: str, name: str) -> list[str]:
        """Remove a user or team from every project; each change is announced (lifecycle re-sends RBAC)."""
        took = []
        for membership in (await self.access.members.items()).values():
            project = membership.project

            def change(current: Membership | None) -> Membership | None:
                return logic.without(current, kind, name) if current is not None else None

            if logic.without(membership, kind, name) is None:
                continue
            await self.access.members.mutate(project, change)
            await self.access._announce_current(project)
            took.append(f"role in project {project}")
        return took

    # --- teams ----------------------------------------------------------------------------------------
    async def team_remove_member(self, req: TeamMemberRemove) -> TeamRecord:
        await self.access._team(req.team)

        def change(current: TeamRecord | None) -> TeamRecord | None:
            if current is None:
                raise NotFound(f"team {req.team!r} not found")
            return logic.remove_team_member(current, req.user)

        updated = await self.access.teams.mutate(req.team, change)
        assert updated is not None
        await self.announce_team(req.team)
        return updated

    async def announce_team(self, team: str) -> None:
        """A team is an RBAC group, and an owner's admin may come from it: lifecycle re-sends the access of
        the projects the team is in. The memberships' revisions did not change, so each announcement needs an
        id of its own (the same id as the last one would be dropped by the stream as a duplicate)."""
        for membership in (await self.access.members.items()).values():
            if team in membership.teams:
                event = MembershipChanged(project=membership.project, at=time.time())
                msg_id = f"members-{membership.project}-team-{team}-{time.time_ns()}"
                await self.access.bus.publish(subjects.MEMBERSHIP_CHANGED, event, msg_id=msg_id)

    async def team_delete(self, req: NameRequest) -> Removed:
        team, _ = await self.access._team(req.name)
        took = [f"{len(team.members)} member(s)"] if team.members else []
        took += await self._leave_projects("team", team.name)
        await self.access.teams.purge(team.name)
        logger.info("team %r deleted", team.name)
        return Removed(kind="team", name=team.name, took=tuple(took))

    # --- projects --------------------------------------------------------------------------------------
    async def members_delete(self, req: NameRequest) -> Removed:
        """Forget a deleted project's members (the registry deletes the project itself)."""
        check_name(req.name, "project name")
        found = await self.access.members.get(req.name)
        if found is None:
            return Removed(kind="membership", name=req.name)
        took = [f"user {u}" for u in found[0].users] + [f"team {t}" for t in found[0].teams]
        await self.access.members.purge(req.name)
        return Removed(kind="membership", name=req.name, took=tuple(took))

    def install(self, served: Endpoints) -> None:
        A = subjects.Access
        served.platform(A.TOKEN_LIST, NameRequest, self.token_list)
        served.platform(A.TOKEN_CREATE, TokenCreate, self.token_create)
        served.platform(A.TOKEN_REVOKE, TokenRef, self.token_revoke)
        served.platform(A.TOKEN_ROTATE, TokenRef, self.token_rotate)
        served.platform(A.USER_DISABLE, UserDisable, self.user_disable)
        served.platform(A.USER_DELETE, NameRequest, self.user_delete)
        served.platform(A.TEAM_REMOVE_MEMBER, TeamMemberRemove, self.team_remove_member)
        served.platform(A.TEAM_DELETE, NameRequest, self.team_delete)
        served.platform(A.MEMBERS_DELETE, NameRequest, self.members_delete)
