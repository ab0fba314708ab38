"""Every API call is authorised: the role x action matrix, team roles, and access removal."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from agent.drivers.sim import read_state
from schemas import subjects
from schemas.changes import UserDisable
from schemas.errors import InvalidInput
from schemas.messages import (
    Authorize,
    MemberChange,
    Membership,
    Message,
    SessionsEnded,
    UserRecord,
    WorkloadAction,
    WorkloadRecord,
    WorkloadRef,
    decode,
    encode,
)
from services.bus.endpoints import call
from tests.harness import Stack, wait_for

P = "/api/v1/projects/p1"


async def test_permission_matrix(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    tokens = {name: await stack.user(name) for name in ("alice", "bob", "carol", "dave", "erin")}
    tokens["admin"] = stack.admin_token
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["erin"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    for who, role in (("alice", "admin"), ("bob", "user"), ("carol", "viewer")):
        await stack.ok("PUT", f"{P}/members", json={"user": who, "role": role})
    await stack.ok("PUT", f"{P}/members", json={"team": "devs", "role": "user"})
    bobs = await stack.ok("POST", f"{P}/tenants", token=tokens["bob"], json={"name": "bobs"})
    await stack.wait_synced("tenant", "p1", "bobs")

    async def status(who: str, method: str, path: str, body: object = None) -> int:
        return (await stack.req(method, path, token=tokens[who], json=body)).status_code

    everyone = ("admin", "alice", "bob", "carol", "erin", "dave")
    matrix: list[tuple[str, str, object, dict[str, int]]] = [
        ("GET", "/api/v1/clusters", None, dict.fromkeys(everyone, 200)),
        ("POST", "/api/v1/clusters", {"name": "cx"}, {"admin": 201} | dict.fromkeys(everyone[1:], 403)),
        ("POST", "/api/v1/users", {"name": "zed"}, {"admin": 201} | dict.fromkeys(everyone[1:], 403)),
        ("POST", "/api/v1/projects", {"name": "p2"}, {"admin": 201} | dict.fromkeys(everyone[1:], 403)),
        ("GET", P, None, {"admin": 200, "alice": 200, "bob": 200, "carol": 200, "erin": 200, "dave": 403}),
        (
            "GET",
            f"{P}/tenants/bobs",
            None,
            {"admin": 200, "alice": 200, "bob": 200, "carol": 200, "erin": 200, "dave": 403},
        ),
        (
            "GET",
            "/api/v1/tenants?project=p1",
            None,
            {"admin": 200, "alice": 200, "bob": 200, "carol": 200, "erin": 200, "dave": 403},
        ),
        ("POST", f"{P}/tenants/bobs/sleep", None, {"carol": 403, "erin": 403, "dave": 403, "bob": 200}),
        ("POST", f"{P}/tenants/bobs/wake", None, {"carol": 403, "erin": 403, "dave": 403, "alice": 200}),
        ("DELETE", f"{P}/tenants/bobs", None, {"carol": 403, "erin": 403, "dave": 403}),
        (
            "PUT",
            f"{P}/members",
            {"user": "dave", "role": "viewer"},
            {"bob": 403, "carol": 403, "erin": 403, "dave": 403, "alice": 200},
        ),
    ]
    for method, path, body, expected in matrix:
        before = await stack.workload("tenant", "p1", "bobs")
        for who, want in expected.items():
            payload = body
            if method == "POST" and isinstance(body, dict) and path.endswith(("clusters", "users", "projects")):
                payload = {"name": f"{body['name']}-{who}"}
            got = await status(who, method, path, payload)
            assert got == want, f"{who} {method} {path}: {got} != {want}"
            if got == 403 and before is not None:
                after = await stack.workload("tenant", "p1", "bobs")
                assert after is not None and after["desired"]["generation"] == before["desired"]["generation"]

    # create: users (directly or through a team) and admins may; viewers and strangers may not
    for who, want in (("carol", 403), ("dave", 403), ("erin", 201), ("alice", 201), ("bob", 201)):
        resp = await stack.req("POST", f"{P}/spaces", token=tokens[who], json={"name": f"s-{who}"})
        assert resp.status_code == want, (who, resp.text)
    denied = await stack.req("POST", f"{P}/tenants/bobs/sleep", token=tokens["erin"])
    assert "own" in denied.json()["error"]["message"]
    # a user sees only the projects they belong to
    assert [p["name"] for p in (await stack.ok("GET", "/api/v1/projects", token=tokens["dave"]))["items"]] == ["p1"]
    carol_sees = (await stack.ok("GET", "/api/v1/tenants", token=tokens["carol"]))["items"]
    assert [t["name"] for t in carol_sees] == ["bobs"]
    assert bobs["created_by"] == "bob"


async def test_removing_a_member_removes_their_access_on_the_cluster(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "c1"
    await stack.connected("c1", state)
    carol = await stack.user("carol")
    await stack.user("bob")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", f"{P}/members", json={"user": "bob", "role": "user"})
    await stack.ok("PUT", f"{P}/members", json={"user": "carol", "role": "viewer"})
    await stack.ok("POST", f"{P}/spaces", json={"name": "s1"})
    await stack.wait_synced("space", "p1", "s1")

    def members_on_cluster() -> dict[str, str]:
        obj = read_state(state)["objects"]["space/p1/s1"]
        return {m["subject"]: m["access"] for m in obj["members"]}

    assert members_on_cluster() == {"user:bob": "view", "user:carol": "view"}
    assert (await stack.req("GET", f"{P}/spaces/s1", token=carol)).status_code == 200

    await stack.ok("DELETE", f"{P}/members/user/carol")
    await wait_for(lambda: "user:carol" not in members_on_cluster(), timeout=20, what="carol's binding removed")
    assert members_on_cluster() == {"user:bob": "view"}
    assert (await stack.req("GET", f"{P}/spaces/s1", token=carol)).status_code == 403
    space = await stack.wait_synced("space", "p1", "s1")
    assert space["desired"]["operation"] == "access" and space["desired"]["generation"] == 2


async def test_a_project_users_actions_ask_access_once_then_only_lifecycle_with_no_read(
    stack: Stack, tmp_path: Path
) -> None:
    """The owner check rides on the action (``WorkloadAction.owned_by``): no read of the record before it. An
    allowed decision is reused for a while; a refusal is not, and removing the member forgets it at once."""
    await stack.connected("c1", tmp_path / "c1")
    bob, erin = await stack.user("bob"), await stack.user("erin")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    for who in ("bob", "erin"):
        await stack.ok("PUT", f"{P}/members", json={"user": who, "role": "user"})
    await stack.ok("POST", f"{P}/tenants", token=bob, json={"name": "bobs"})
    await stack.wait_synced("tenant", "p1", "bobs")

    asked: list[tuple[str, Any]] = []
    nc = await stack.nc()
    try:
        for subject, type_ in (
            (subjects.Access.AUTHORIZE, Authorize),
            (subjects.Lifecycle.GET, WorkloadRef),
            (subjects.Lifecycle.ACTION, WorkloadAction),
            (subjects.Lifecycle.ACTION_OWN, WorkloadAction),
        ):

            async def seen(msg: Msg, t: type[Message] = type_) -> None:
                asked.append((msg.subject, decode(msg.data, t)))

            # A plain subscription beside the services' queue groups sees every request and answers none.
            await nc.subscribe(subject, cb=seen)
        await nc.flush()

        assert (await stack.req("POST", f"{P}/tenants/bobs/sleep", token=bob)).status_code == 200
        denied = await stack.req("POST", f"{P}/tenants/bobs/wake", token=erin)
        assert denied.status_code == 403
        assert denied.json()["error"]["message"] == (
            "user 'erin' may manage only their own tenants and spaces in project 'p1' (this one belongs to 'bob')"
        )
        assert (await stack.req("POST", f"{P}/tenants/bobs/wake", token=bob)).status_code == 200
        await nc.flush()
        await wait_for(lambda: len(asked) >= 5, timeout=5, what="the five requests seen")
        answered = list(asked)
        nobodys = WorkloadAction(kind="tenant", project="p1", name="bobs", action="wake", by="erin")
        with pytest.raises(InvalidInput, match="owned_by"):
            await call(nc, subjects.Lifecycle.ACTION_OWN, nobodys, WorkloadRecord)
    finally:
        await nc.close()

    assert [(s, getattr(m, "user", getattr(m, "owned_by", ""))) for s, m in answered] == [
        (subjects.Access.AUTHORIZE, "bob"),
        (subjects.Lifecycle.ACTION_OWN, "bob"),
        (subjects.Access.AUTHORIZE, "erin"),
        (subjects.Lifecycle.ACTION_OWN, "erin"),
        (subjects.Lifecycle.ACTION_OWN, "bob"),  # access's yes kept; erin's wake in between changed nothing
    ]
    await stack.ok("DELETE", f"{P}/members/user/bob")
    removed = await stack.req("POST", f"{P}/tenants/bobs/sleep", token=bob)
    assert removed.status_code == 403 and "not a member" in removed.json()["error"]["message"]
    bobs = await stack.workload("tenant", "p1", "bobs")
    assert bobs is not None and bobs["desired"]["state"] == "running"


async def test_a_role_removed_by_any_replica_is_refused_at_once_not_after_the_kept_decision(
    stack: Stack, tmp_path: Path
) -> None:
    """The API forgets its kept decisions when access announces a change of members (``MembershipChanged``),
    whoever made it: here access itself, as another API replica would."""
    await stack.connected("c1", tmp_path / "c1")
    bob = await stack.user("bob")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", f"{P}/members", json={"user": "bob", "role": "user"})
    await stack.ok("POST", f"{P}/tenants", token=bob, json={"name": "bobs"})
    assert (await stack.req("GET", f"{P}/tenants/bobs", token=bob)).status_code == 200  # the read's yes is kept

    nc = await stack.nc()
    try:
        await call(nc, subjects.Access.MEMBER_SET, MemberChange(project="p1", user="bob"), Membership)
        removed_at = time.monotonic()

        async def refused() -> bool:
            return (await stack.req("GET", f"{P}/tenants/bobs", token=bob)).status_code == 403

        # Well within the 5 s a decision is kept: only the announcement can have made it forget.
        assert await wait_for(refused, timeout=2.5, what="bob's read refused after his removal")
        assert time.monotonic() - removed_at < 2.5
    finally:
        await nc.close()


async def test_a_replica_that_ends_sessions_tells_the_others_and_they_forget_theirs(
    stack: Stack, tmp_path: Path
) -> None:
    """Ending a session through one API replica (here: disabling a user) sends ``SessionsEnded``; a replica that
    hears one forgets the sessions it keeps, so what another replica ended is refused at once here too."""
    bob = await stack.user("bob")
    kept_at = time.monotonic()
    assert (await stack.req("GET", "/api/v1/clusters", token=bob)).status_code == 200  # bob's session is kept

    notices: list[SessionsEnded] = []
    nc = await stack.nc()
    try:

        async def heard(msg: Msg) -> None:
            notices.append(decode(msg.data, SessionsEnded))

        await nc.subscribe(subjects.API_SESSIONS_ENDED, cb=heard)
        await nc.flush()
        # Another replica's doing, as access sees it: bob disabled behind this replica's back. Its kept session
        # still answers for him until it hears of it.
        await call(nc, subjects.Access.USER_DISABLE, UserDisable(name="bob", disabled=True), UserRecord)
        await nc.publish(subjects.API_SESSIONS_ENDED, encode(SessionsEnded(at=time.time())))

        async def refused() -> bool:
            return (await stack.req("GET", "/api/v1/clusters", token=bob)).status_code == 401

        # Before the kept session would have expired by itself (5 s after it was kept).
        within = kept_at + 4.0 - time.monotonic()
        assert await wait_for(
            refused, timeout=within, what="bob's disabled session refused once the replica heard of it"
        )

        notices.clear()
        await stack.ok("POST", "/api/v1/users/bob/enable")  # through this replica: it tells the others
        await wait_for(lambda: notices, timeout=5, what="the API's SessionsEnded notice")
    finally:
        await nc.close()
