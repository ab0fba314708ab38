"""Pure access rules: tokens, users, teams, memberships and the permission matrix.

No I/O and no clock of its own (``now`` is passed in). The service reads the
records, asks these functions, and writes what they return.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from typing import get_args

from schemas.errors import InvalidInput, NotFound
from schemas.messages import (
    AccessAction,
    Decision,
    MemberChange,
    Membership,
    Role,
    TeamCreate,
    TeamRecord,
    TokenRecord,
    UserCreate,
    UserRecord,
    own_only,
)
from schemas.names import check_name

TOKEN_PREFIX = "tat_"
MAX_TEAM_MEMBERS = 1000


# --- tokens -----------------------------------------------------------------------------
def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """API tokens carry 256 random bits, so one SHA-256 is enough to store them safely."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_token_shape(token: str) -> str:
    if not token.startswith(TOKEN_PREFIX) or not 20 <= len(token) <= 200:
        raise InvalidInput("malformed API token")
    return token


TOKEN_ID_LENGTH = 12
MAX_TOKEN_TTL = 5 * 365 * 24 * 3600.0
MAX_TOKENS_PER_USER = 100
MAX_TOKEN_NAME = 200


def token_id(key: str) -> str:
    """A token's public id: the start of its hash (its KV key)."""
    return key[:TOKEN_ID_LENGTH]


def check_token_id(text: str) -> str:
    if len(text) != TOKEN_ID_LENGTH or any(c not in "0123456789abcdef" for c in text):
        raise InvalidInput(
            f"invalid token id {text!r}: expected {TOKEN_ID_LENGTH} hex digits (see 'tether token list')"
        )
    return text


def new_token_record(user: str, name: str, ttl: float, now: float) -> TokenRecord:
    check_name(user, "user name")
    if len(name) > MAX_TOKEN_NAME or any(not c.isprintable() for c in name):
        raise InvalidInput(f"a token name is at most {MAX_TOKEN_NAME} printable characters")
    if not 0 <= ttl <= MAX_TOKEN_TTL:
        raise InvalidInput("a token's ttl is between 0 (never expires) and 5 years")
    return TokenRecord(user=user, created_at=now, name=name, expires_at=now + ttl if ttl else 0.0)


def token_problem(record: TokenRecord, user: UserRecord | None, now: float) -> str:
    """Why this token may not log in, or "" when it may."""
    if user is None:
        return f"the token's user {record.user!r} no longer exists"
    if user.disabled:
        return f"user {user.name!r} is disabled"
    if record.expires_at and now >= record.expires_at:
        return "API token expired"
    return ""


def other_enabled_admins(users: Iterable[UserRecord], name: str) -> int:
    return sum(u.platform_admin and not u.disabled and u.name != name for u in users)


def remove_team_member(team: TeamRecord, user: str) -> TeamRecord:
    check_name(user, "user name")
    if user not in team.members:
        raise NotFound(f"user {user!r} is not a member of team {team.name!r}")
    return TeamRecord(name=team.name, members=tuple(m for m in team.members if m != user), created_at=team.created_at)


def without(membership: Membership, kind: str, name: str) -> Membership | None:
    """The membership with one user or team removed, or None when they were not in it."""
    table = membership.users if kind == "user" else membership.teams
    if name not in table:
        return None
    rest = {k: v for k, v in table.items() if k != name}
    if kind == "user":
        return Membership(project=membership.project, users=rest, teams=dict(membership.teams))
    return Membership(project=membership.project, users=dict(membership.users), teams=rest)


# --- users and teams ------------------------------------------------------------------------
def new_user(name: str, email: str, now: float, *, platform_admin: bool = False) -> UserRecord:
    check_name(name, "user name")
    if email and ("@" not in email or len(email) > 254):
        raise InvalidInput(f"invalid email {email!r}")
    return UserRecord(name=name, email=email, platform_admin=platform_admin, created_at=now)


def user_from_request(req: UserCreate, now: float) -> UserRecord:
    return new_user(req.name, req.email, now, platform_admin=req.platform_admin)


def new_team(req: TeamCreate, now: float) -> TeamRecord:
    """A validated team record; members deduplicated, in the order given."""
    check_name(req.name, "team name")
    if len(req.members) > MAX_TEAM_MEMBERS:
        raise InvalidInput(f"a team has at most {MAX_TEAM_MEMBERS} members (got {len(req.members)})")
    members = tuple(dict.fromkeys(check_name(m, "user name") for m in req.members))
    return TeamRecord(name=req.name, members=members, created_at=now)


def add_team_member(team: TeamRecord, user: str) -> TeamRecord | None:
    """The team with ``user`` added, or None when they are a member already (nothing to write)."""
    check_name(user, "user name")
    if user in team.members:
        return None
    if len(team.members) >= MAX_TEAM_MEMBERS:
        raise InvalidInput(f"team {team.name!r} has {MAX_TEAM_MEMBERS} members already")
    return TeamRecord(name=team.name, members=(*team.members, user), created_at=team.created_at)


def teams_of(user: str, teams: Iterable[TeamRecord]) -> set[str]:
    """Names of the teams ``user`` belongs to."""
    return {team.name for team in teams if user in team.members}


# --- roles and memberships --------------------------------------------------------------------
ROLES: tuple[Role, ...] = get_args(Role)
RANK: dict[Role, int] = {"viewer": 1, "user": 2, "admin": 3}


def check_role(role: str) -> Role:
    for known in ROLES:
        if role == known:
            return known
    raise InvalidInput(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")


def highest(roles: Iterable[Role | None]) -> Role | None:
    best: Role | None = None
    for role in roles:
        if role is not None and (best is None or RANK[role] > RANK[best]):
            best = role
    return best


def effective_role(user: str, membership: Membership | None, teams_of_user: Iterable[str]) -> Role | None:
    """The highest of the user's direct role and the roles of the teams they belong to."""
    if membership is None:
        return None
    direct = membership.users.get(user)
    through_teams = (membership.teams.get(team) for team in teams_of_user)
    return highest([direct, *through_teams])


def check_member_change(req: MemberChange) -> MemberChange:
    check_name(req.project, "project name")
    if bool(req.user) == bool(req.team):
        raise InvalidInput("a member change names exactly one of user or team")
    if req.user:
        check_name(req.user, "user name")
    else:
        check_name(req.team, "team name")
    if req.role is not None:
        check_role(req.role)
    return req


def subject_of(req: MemberChange) -> tuple[str, str]:
    """``("user", name)`` or ``("team", name)``."""
    return ("user", req.user) if req.user else ("team", req.team)


def change_membership(current: Membership | None, req: MemberChange) -> Membership | None:
    """The membership after ``req``, or None when nothing changes.

    Setting a role adds or replaces it; removing (role None) someone who is not
    a member raises NotFound.
    """
    check_member_change(req)
    membership = current or Membership(project=req.project)
    kind, name = subject_of(req)
    users, teams = dict(membership.users), dict(membership.teams)
    table = users if kind == "user" else teams
    if req.role is None:
        if name not in table:
            raise NotFound(f"{kind} {name!r} is not a member of project {req.project!r}")
        del table[name]
    else:
        if current is not None and table.get(name) == req.role:
            return None
        table[name] = req.role
    return Membership(project=req.project, users=users, teams=teams)


def visible_projects(user: str, memberships: Iterable[Membership], teams_of_user: Iterable[str]) -> dict[str, Role]:
    """Every project where ``user`` has a role (directly or through a team), with that role."""
    teams = set(teams_of_user)
    out: dict[str, Role] = {}
    for membership in memberships:
        role = effective_role(user, membership, teams)
        if role is not None:
            out[membership.project] = role
    return out


# --- the permission matrix ------------------------------------------------------------------------
PLATFORM_ADMIN_ACTIONS: frozenset[AccessAction] = frozenset(
    {
        "cluster.connect",
        "cluster.disconnect",
        "user.create",
        "user.list",
        "team.create",
        "team.manage",
        "project.create",
    }
)
"""Only platform admins may do these."""

ANYONE_ACTIONS: frozenset[AccessAction] = frozenset({"cluster.read"})
"""Any authenticated user (the API filters what a non-admin sees)."""

PROJECT_ACTIONS: dict[AccessAction, tuple[Role, ...]] = {
    "project.read": ("viewer", "user", "admin"),
    "workload.read": ("viewer", "user", "admin"),
    "project.manage": ("admin",),
    "workload.create": ("user", "admin"),
    "workload.manage": ("user", "admin"),
}
"""Project-scoped actions and the roles that may do them (``workload.manage`` with role user: own only)."""

ACTIONS = frozenset(PLATFORM_ADMIN_ACTIONS | ANYONE_ACTIONS | PROJECT_ACTIONS.keys())


def check_action(action: str) -> AccessAction:
    """``action`` as one the matrix knows (it arrives as a string over the bus)."""
    if action not in ACTIONS:
        raise InvalidInput(f"unknown action {action!r}: expected one of {', '.join(sorted(ACTIONS))}")
    return action


def needs_project(action: str) -> bool:
    return action in PROJECT_ACTIONS


def check_authorize(action: str, project: str) -> None:
    """Validate an authorization question before any lookup."""
    check_action(action)
    if project:
        check_name(project, "project name")
    elif needs_project(action):
        raise InvalidInput(f"action {action!r} needs a project")


def _a(role: Role) -> str:
    return f"an {role}" if role == "admin" else f"a {role}"


def _roles(roles: tuple[Role, ...]) -> str:
    return "role " + " or ".join(roles)


def decide(
    principal_is_admin: bool,
    user: str,
    action: str,
    role: Role | None,
    owner: str = "",
    *,
    project: str = "",
) -> Decision:
    """May ``user`` (with ``role`` in ``project``) do ``action`` on an object owned by ``owner``?

    Platform admins may do everything. Denials say who, where and what was needed.
    """
    action = check_action(action)
    if principal_is_admin:
        return Decision(allowed=True, role=role, reason=f"user {user!r} is a platform admin")
    if action in ANYONE_ACTIONS:
        return Decision(allowed=True, role=role, reason=f"any authenticated user may do {action}")
    if action in PLATFORM_ADMIN_ACTIONS:
        return Decision(allowed=False, role=role, reason=f"user {user!r} is not a platform admin; {action} needs one")
    where = f"project {project!r}"
    if role is None:
        return Decision(allowed=False, role=None, reason=f"user {user!r} is not a member of {where}")
    allowed_roles = PROJECT_ACTIONS[action]
    if role not in allowed_roles:
        return Decision(
            allowed=False,
            role=role,
            reason=f"user {user!r} is {_a(role)} in {where}; {action} needs {_roles(allowed_roles)}",
        )
    if action == "workload.manage" and role != "admin" and owner != user:
        return Decision(
            allowed=False,
            role=role,
            reason=own_only(user, project, owner),
        )
    return Decision(allowed=True, role=role, reason=f"user {user!r} is {_a(role)} in {where}")
