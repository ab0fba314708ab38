"""Routes that change or remove people: users (delete, disable, enable), API tokens, team members, teams.

Platform admins manage users and teams. Every user manages their own API tokens; an admin anyone's.
Any change that could end a session clears this process's authentication cache at once.
"""

# No "from __future__ import annotations": FastAPI resolves the routes' local annotations at definition.
from enum import Enum

from fastapi import FastAPI

from schemas import subjects
from schemas.api import TeamOut, UserOut
from schemas.api_changes import RemovedOut, TokenCreatedOut, TokenIn, TokenListOut, TokenOut
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
from schemas.errors import Forbidden
from schemas.messages import NameRequest, Principal, TeamRecord, UserRecord
from schemas.names import check_name
from services.api import logic
from services.api.auth import ERRORS, Change, Platform, Who, require_admin


def removed_view(r: Removed) -> RemovedOut:
    return RemovedOut(kind=r.kind, name=r.name, took=list(r.took))


def token_view(t: TokenInfo) -> TokenOut:
    return TokenOut(
        id=t.id, user=t.user, name=t.name, created_at=logic.ts(t.created_at), expires_at=logic.ts(t.expires_at)
    )


def _own_or_admin(who: Principal, user: str) -> None:
    check_name(user, "user name")
    if who.user != user and not who.platform_admin:
        raise Forbidden(f"user {who.user!r} may manage only their own API tokens, not {user!r}'s")


def install_people_routes(app: FastAPI, platform: "Platform") -> None:
    tags: list[str | Enum] = ["access"]

    @app.delete("/api/v1/users/{name}", response_model=RemovedOut, responses=ERRORS, tags=tags)
    async def delete_user(name: str, who: Who) -> RemovedOut:
        """Delete a user: their API tokens stop working at once; their team places and project roles go."""
        require_admin(who)
        check_name(name, "user name")
        removed = await platform.call(subjects.Access.USER_DELETE, NameRequest(name=name), Removed)
        await platform.end_sessions(Change(user=name))
        return removed_view(removed)

    async def set_disabled(name: str, who: Principal, disabled: bool) -> UserOut:
        require_admin(who)
        check_name(name, "user name")
        user = await platform.call(subjects.Access.USER_DISABLE, UserDisable(name=name, disabled=disabled), UserRecord)
        await platform.end_sessions(Change(user=name))
        return logic.user_view(user)

    @app.post("/api/v1/users/{name}/disable", response_model=UserOut, responses=ERRORS, tags=tags)
    async def disable_user(name: str, who: Who) -> UserOut:
        """Refuse the user's tokens until they are enabled again (nothing is deleted)."""
        return await set_disabled(name, who, True)

    @app.post("/api/v1/users/{name}/enable", response_model=UserOut, responses=ERRORS, tags=tags)
    async def enable_user(name: str, who: Who) -> UserOut:
        return await set_disabled(name, who, False)

    @app.get("/api/v1/users/{name}/tokens", response_model=TokenListOut, responses=ERRORS, tags=tags)
    async def list_tokens(name: str, who: Who) -> TokenListOut:
        _own_or_admin(who, name)
        tokens = await platform.call(subjects.Access.TOKEN_LIST, NameRequest(name=name), TokenList)
        return TokenListOut(items=[token_view(t) for t in tokens.tokens])

    @app.post(
        "/api/v1/users/{name}/tokens", response_model=TokenCreatedOut, status_code=201, responses=ERRORS, tags=tags
    )
    async def create_token(name: str, body: TokenIn, who: Who) -> TokenCreatedOut:
        """Another API token for the user (the others keep working)."""
        _own_or_admin(who, name)
        created = await platform.call(
            subjects.Access.TOKEN_CREATE, TokenCreate(user=name, name=body.name, ttl=body.ttl), TokenCreated
        )
        return TokenCreatedOut(info=token_view(created.info), token=created.token)

    @app.delete("/api/v1/users/{name}/tokens/{token_id}", response_model=RemovedOut, responses=ERRORS, tags=tags)
    async def revoke_token(name: str, token_id: str, who: Who) -> RemovedOut:
        _own_or_admin(who, name)
        removed = await platform.call(subjects.Access.TOKEN_REVOKE, TokenRef(user=name, id=token_id), Removed)
        await platform.end_sessions(Change(user=name))
        return removed_view(removed)

    @app.post(
        "/api/v1/users/{name}/tokens/{token_id}/rotate", response_model=TokenCreatedOut, responses=ERRORS, tags=tags
    )
    async def rotate_token(name: str, token_id: str, who: Who) -> TokenCreatedOut:
        """A new token with the same name and lifetime; the old one stops working at once."""
        _own_or_admin(who, name)
        created = await platform.call(subjects.Access.TOKEN_ROTATE, TokenRef(user=name, id=token_id), TokenCreated)
        await platform.end_sessions(Change(user=name))
        return TokenCreatedOut(info=token_view(created.info), token=created.token)

    @app.delete("/api/v1/teams/{team}/members/{user}", response_model=TeamOut, responses=ERRORS, tags=tags)
    async def remove_team_member(team: str, user: str, who: Who) -> TeamOut:
        require_admin(who)
        check_name(team, "team name")
        check_name(user, "user name")
        record = await platform.call(
            subjects.Access.TEAM_REMOVE_MEMBER, TeamMemberRemove(team=team, user=user), TeamRecord
        )
        await platform.end_sessions(Change(user=user))  # access announces the team's projects too
        return logic.team_view(record)

    @app.delete("/api/v1/teams/{team}", response_model=RemovedOut, responses=ERRORS, tags=tags)
    async def delete_team(team: str, who: Who) -> RemovedOut:
        """Delete a team: its roles in projects go (its members keep their own roles)."""
        require_admin(who)
        check_name(team, "team name")
        removed = await platform.call(subjects.Access.TEAM_DELETE, NameRequest(name=team), Removed)
        await platform.end_sessions()  # its members' roles in every project it was in
        return removed_view(removed)
