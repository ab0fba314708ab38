from __future__ import annotations

import re
import typing
from typing import Literal

import pytest

from schemas.errors import InvalidInput, NotFound
from schemas.messages import AccessAction, MemberChange, Membership, Role, TeamCreate, TeamRecord
from services.access import logic

NOW = 1_000_000.0
ME = "bob"
OTHER = "alice"
P = "p1"

Who = Literal["none", "viewer", "user", "admin", "platform-admin"]
WHO: tuple[Who, ...] = ("none", "viewer", "user", "admin", "platform-admin")

# action -> the kinds of principal allowed; "workload.manage" is split into own and others'.
ALLOWED: dict[str, set[Who]] = {
    "cluster.connect": {"platform-admin"},
    "cluster.disconnect": {"platform-admin"},
    "user.create": {"platform-admin"},
    "user.list": {"platform-admin"},
    "team.create": {"platform-admin"},
    "team.manage": {"platform-admin"},
    "project.create": {"platform-admin"},
    "cluster.read": {"none", "viewer", "user", "admin", "platform-admin"},
    "project.read": {"viewer", "user", "admin", "platform-admin"},
    "workload.read": {"viewer", "user", "admin", "platform-admin"},
    "project.manage": {"admin", "platform-admin"},
    "workload.create": {"user", "admin", "platform-admin"},
    "workload.manage:own": {"user", "admin", "platform-admin"},
    "workload.manage:others": {"admin", "platform-admin"},
}

MATRIX = [(who, case, who in allowed) for case, allowed in ALLOWED.items() for who in WHO]


def _ask(who: Who, case: str):  # type: ignore[no-untyped-def]
    action, _, whose = case.partition(":")
    owner = OTHER if whose == "others" else ME
    role: Role | None = None if who in ("none", "platform-admin") else who  # type: ignore[assignment]
    return logic.decide(who == "platform-admin", ME, action, role, owner, project=P)


def test_the_matrix_covers_every_action() -> None:
    assert {case.partition(":")[0] for case in ALLOWED} == logic.ACTIONS
    assert set(typing.get_args(AccessAction)) == logic.ACTIONS, "every action of the schema is in the matrix"


@pytest.mark.parametrize(("who", "case", "allowed"), MATRIX, ids=[f"{w}-{c}" for w, c, _ in MATRIX])
def test_permission_matrix(who: Who, case: str, allowed: bool) -> None:
    decision = _ask(who, case)
    assert decision.allowed is allowed, decision.reason
    assert decision.reason
    if not allowed:
        assert repr(ME) in decision.reason


@pytest.mark.parametrize(
    ("role", "action", "reason"),
    [
        (
            "viewer",
            "workload.create",
            "user 'bob' is a viewer in project 'p1'; workload.create needs role user or admin",
        ),
        ("user", "project.manage", "user 'bob' is a user in project 'p1'; project.manage needs role admin"),
        (
            "viewer",
            "workload.manage",
            "user 'bob' is a viewer in project 'p1'; workload.manage needs role user or admin",
        ),
        (None, "project.read", "user 'bob' is not a member of project 'p1'"),
        (None, "workload.read", "user 'bob' is not a member of project 'p1'"),
    ],
)
def test_denials_name_the_user_the_project_and_the_needed_role(role: Role | None, action: str, reason: str) -> None:
    decision = logic.decide(False, ME, action, role, ME, project=P)
    assert not decision.allowed
    assert decision.reason == reason
    assert decision.role == role


def test_managing_someone_elses_workload_says_own_only() -> None:
    decision = logic.decide(False, ME, "workload.manage", "user", OTHER, project=P)
    assert not decision.allowed
    assert decision.reason.startswith("user 'bob' may manage only their own tenants and spaces in project 'p1'")
    assert "'alice'" in decision.reason
    unowned = logic.decide(False, ME, "workload.manage", "user", "", project=P)
    assert not unowned.allowed


def test_platform_only_denial_says_so() -> None:
    decision = logic.decide(False, ME, "cluster.connect", "admin", project=P)
    assert not decision.allowed
    assert decision.reason == "user 'bob' is not a platform admin; cluster.connect needs one"


def test_platform_admin_keeps_their_project_role_in_the_decision() -> None:
    decision = logic.decide(True, "root", "workload.manage", "viewer", OTHER, project=P)
    assert decision.allowed and decision.role == "viewer"
    assert "platform admin" in decision.reason


@pytest.mark.parametrize("action", ["tenant.delete", "", "workload.*", "CLUSTER.READ"])
def test_unknown_action_is_invalid_input_naming_it(action: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(f"unknown action {action!r}")):
        logic.decide(True, ME, action, None)
    with pytest.raises(InvalidInput, match="unknown action"):
        logic.check_authorize(action, P)


def test_project_actions_need_a_project() -> None:
    with pytest.raises(InvalidInput, match=r"'project\.read' needs a project"):
        logic.check_authorize("project.read", "")
    logic.check_authorize("cluster.read", "")
    with pytest.raises(InvalidInput, match="invalid project name"):
        logic.check_authorize("project.read", "Bad_Name")


# --- effective roles ------------------------------------------------------------------------------
def test_team_role_raises_the_direct_role() -> None:
    membership = Membership(project=P, users={ME: "viewer"}, teams={"ops": "admin", "devs": "user"})
    assert logic.effective_role(ME, membership, ["ops"]) == "admin"
    assert logic.effective_role(ME, membership, ["devs"]) == "user"
    assert logic.effective_role(ME, membership, []) == "viewer"
    decision = logic.decide(False, ME, "project.manage", logic.effective_role(ME, membership, {"ops"}), project=P)
    assert decision.allowed and decision.role == "admin"


def test_team_role_never_lowers_the_direct_role() -> None:
    membership = Membership(project=P, users={ME: "admin"}, teams={"ops": "viewer"})
    assert logic.effective_role(ME, membership, ["ops"]) == "admin"


def test_no_role_without_membership() -> None:
    assert logic.effective_role(ME, None, ["ops"]) is None
    membership = Membership(project=P, users={OTHER: "admin"}, teams={"ops": "admin"})
    assert logic.effective_role(ME, membership, ["devs"]) is None
    assert logic.effective_role(ME, membership, ["ops"]) == "admin"


def test_teams_of_and_visible_projects() -> None:
    teams = [TeamRecord(name="ops", members=(ME, OTHER)), TeamRecord(name="devs", members=(OTHER,))]
    mine = logic.teams_of(ME, teams)
    assert mine == {"ops"}
    memberships = [
        Membership(project="a", users={ME: "viewer"}),
        Membership(project="b", teams={"ops": "user"}),
        Membership(project="c", teams={"devs": "admin"}),
        Membership(project="d", users={ME: "viewer"}, teams={"ops": "admin"}),
    ]
    assert logic.visible_projects(ME, memberships, mine) == {"a": "viewer", "b": "user", "d": "admin"}


# --- validation -----------------------------------------------------------------------------------
@pytest.mark.parametrize("role", ["admin", "user", "viewer"])
def test_check_role_accepts_roles(role: str) -> None:
    assert logic.check_role(role) == role


@pytest.mark.parametrize("role", ["owner", "", "Admin"])
def test_check_role_refuses_others(role: str) -> None:
    with pytest.raises(InvalidInput, match="invalid role"):
        logic.check_role(role)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (MemberChange(project=P, role="user"), "exactly one of user or team"),
        (MemberChange(project=P, user=ME, team="ops", role="user"), "exactly one of user or team"),
        (MemberChange(project="P_1", user=ME, role="user"), "invalid project name"),
        (MemberChange(project=P, user="Bob", role="user"), "invalid user name 'Bob'"),
        (MemberChange(project=P, team="ops!", role="user"), "invalid team name"),
    ],
)
def test_check_member_change_refuses(change: MemberChange, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        logic.check_member_change(change)


def test_change_membership_sets_replaces_and_removes() -> None:
    m = logic.change_membership(None, MemberChange(project=P, user=ME, role="viewer"))
    assert m == Membership(project=P, users={ME: "viewer"})
    m = logic.change_membership(m, MemberChange(project=P, team="ops", role="admin"))
    assert m == Membership(project=P, users={ME: "viewer"}, teams={"ops": "admin"})
    m = logic.change_membership(m, MemberChange(project=P, user=ME, role="user"))
    assert m is not None and m.users == {ME: "user"}
    assert logic.change_membership(m, MemberChange(project=P, user=ME, role="user")) is None
    m = logic.change_membership(m, MemberChange(project=P, user=ME))
    assert m == Membership(project=P, teams={"ops": "admin"})


def test_removing_a_non_member_is_not_found() -> None:
    with pytest.raises(NotFound, match="user 'bob' is not a member of project 'p1'"):
        logic.change_membership(None, MemberChange(project=P, user=ME))
    with pytest.raises(NotFound, match="team 'ops' is not a member of project 'p1'"):
        logic.change_membership(Membership(project=P, users={"ops": "admin"}), MemberChange(project=P, team="ops"))


def test_new_team_validates_and_dedups_members() -> None:
    team = logic.new_team(TeamCreate(name="ops", members=(ME, OTHER, ME)), NOW)
    assert team.members == (ME, OTHER) and team.created_at == NOW
    with pytest.raises(InvalidInput, match="invalid team name"):
        logic.new_team(TeamCreate(name="Ops"), NOW)
    with pytest.raises(InvalidInput, match="invalid user name"):
        logic.new_team(TeamCreate(name="ops", members=("a b",)), NOW)


def test_add_team_member_is_idempotent() -> None:
    team = TeamRecord(name="ops", members=(ME,), created_at=NOW)
    assert logic.add_team_member(team, ME) is None
    added = logic.add_team_member(team, OTHER)
    assert added == TeamRecord(name="ops", members=(ME, OTHER), created_at=NOW)


def test_tokens_are_hashed_and_shaped() -> None:
    token = logic.new_token()
    assert logic.check_token_shape(token) == token
    assert token not in logic.token_hash(token) and len(logic.token_hash(token)) == 64
    with pytest.raises(InvalidInput):
        logic.check_token_shape("nope")
