"""Bus messages that change or remove records: users, API tokens, teams, projects and clusters.

Every removal answers with a ``Removed`` naming what went with the record, so the API, the CLI and the
audit trail can say it.
"""

from __future__ import annotations

import msgspec

from schemas.messages import Message, Quota


# --- users and API tokens -------------------------------------------------------------------
class UserDisable(Message, frozen=True, tag="user-disable.v1"):
    name: str
    disabled: bool = True


class TokenInfo(msgspec.Struct, frozen=True, kw_only=True):
    """An API token as listings show it: never the token, never its whole hash."""

    id: str
    """The first 12 hex digits of the token's SHA-256: enough to name it, useless to log in."""
    user: str
    name: str = ""
    created_at: float = 0.0
    expires_at: float = 0.0


class TokenCreate(Message, frozen=True, tag="token-create.v1"):
    user: str
    name: str = ""
    ttl: float = 0.0
    """Seconds the token stays valid; 0: until revoked."""


class TokenCreated(Message, frozen=True, tag="token-created.v1"):
    info: TokenInfo
    token: str
    """Shown once."""


class TokenRef(Message, frozen=True, tag="token-ref.v1"):
    user: str
    id: str


class TokenList(Message, frozen=True, tag="token-list.v1"):
    tokens: list[TokenInfo]


# --- teams --------------------------------------------------------------------------------------
class TeamMemberRemove(Message, frozen=True, tag="team-member-remove.v1"):
    team: str
    user: str


# --- projects -------------------------------------------------------------------------------------
class ProjectUpdate(Message, frozen=True, tag="project-update.v1"):
    """Change what is set (None: keep)."""

    name: str
    display_name: str | None = None
    clusters: tuple[str, ...] | None = None
    cluster_selector: dict[str, str] | None = None
    quota: Quota | None = None
    deleting: bool | None = None


# --- clusters -------------------------------------------------------------------------------------
class ClusterUpdate(Message, frozen=True, tag="cluster-update.v1"):
    """Change what is set (None: keep)."""

    name: str
    display_name: str | None = None
    description: str | None = None
    labels: dict[str, str] | None = None


# --- answers ------------------------------------------------------------------------------------
class Removed(Message, frozen=True, tag="removed.v1"):
    """A record is gone; ``took`` says what went with it (e.g. ``token 1a2b3c``, ``member of project p``)."""

    kind: str
    name: str
    took: tuple[str, ...] = ()
