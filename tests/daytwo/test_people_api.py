"""Users and API tokens through the API: who may, who gets 403 (and nothing changes), and that a token
stops working at once when it is revoked, rotated, expired, or its user is disabled or deleted."""

from __future__ import annotations

from typing import Any

from tests.harness import Stack, wait_for


async def whoami(stack: Stack, token: str) -> int:
    return (await stack.req("GET", "/api/v1/whoami", token=token)).status_code


async def tokens_of(stack: Stack, user: str) -> list[dict[str, Any]]:
    return list((await stack.ok("GET", f"/api/v1/users/{user}/tokens"))["items"])


async def test_tokens_list_create_revoke_rotate_expire(stack: Stack) -> None:
    alice, bob = await stack.user("alice"), await stack.user("bob")
    assert [t["user"] for t in await tokens_of(stack, "alice")] == ["alice"]

    # a user manages their own tokens; another user gets 403 and nothing changes
    for method, path, body in (
        ("GET", "/api/v1/users/alice/tokens", None),
        ("POST", "/api/v1/users/alice/tokens", {"name": "ci"}),
    ):
        resp = await stack.req(method, path, token=bob, json=body)
        assert resp.status_code == 403, resp.text
    assert len(await tokens_of(stack, "alice")) == 1

    created = await stack.ok("POST", "/api/v1/users/alice/tokens", token=alice, json={"name": "ci"})
    second = created["token"]
    assert await whoami(stack, second) == 200 and await whoami(stack, alice) == 200
    ids = {t["id"]: t["name"] for t in await tokens_of(stack, "alice")}
    assert ids[created["info"]["id"]] == "ci" and len(ids) == 2
    listing = str(await stack.ok("GET", "/api/v1/users/alice/tokens", token=alice))
    assert second not in listing and alice not in listing, "a listing never shows a token"

    # bob may not revoke or rotate alice's token: 403, and it still works
    for method, suffix in (("DELETE", ""), ("POST", "/rotate")):
        path = f"/api/v1/users/alice/tokens/{created['info']['id']}{suffix}"
        assert (await stack.req(method, path, token=bob)).status_code == 403
    assert await whoami(stack, second) == 200

    # rotate: the old one stops at once, the new one keeps the name
    rotated = await stack.ok("POST", f"/api/v1/users/alice/tokens/{created['info']['id']}/rotate", token=alice)
    assert await whoami(stack, second) == 401
    assert await whoami(stack, rotated["token"]) == 200 and rotated["info"]["name"] == "ci"

    # revoke (an admin may revoke anyone's)
    await stack.ok("DELETE", f"/api/v1/users/alice/tokens/{rotated['info']['id']}")
    assert await whoami(stack, rotated["token"]) == 401
    assert (await stack.req("DELETE", f"/api/v1/users/alice/tokens/{rotated['info']['id']}")).status_code == 404
    assert (await stack.req("DELETE", "/api/v1/users/alice/tokens/not-an-id")).status_code == 400

    # expire
    short = await stack.ok("POST", "/api/v1/users/alice/tokens", token=alice, json={"name": "short", "ttl": 2})
    assert short["info"]["expires_at"] is not None
    assert await whoami(stack, short["token"]) == 200

    async def expired() -> bool:
        resp = await stack.req("GET", "/api/v1/whoami", token=short["token"])
        return resp.status_code == 401 and "expired" in resp.text

    await wait_for(expired, timeout=15, what="the short-lived token expired")
    assert await whoami(stack, alice) == 200


async def test_disable_and_delete_users(stack: Stack) -> None:
    alice, bob = await stack.user("alice"), await stack.user("bob")
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["alice", "bob"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"user": "alice", "role": "admin"})
    assert await whoami(stack, alice) == 200  # cached by the API now

    # only platform admins disable or delete users; a refused call changes nothing
    for method, path in (("POST", "/api/v1/users/bob/disable"), ("DELETE", "/api/v1/users/bob")):
        assert (await stack.req(method, path, token=alice)).status_code == 403
    assert await whoami(stack, bob) == 200

    disabled = await stack.ok("POST", "/api/v1/users/bob/disable")
    assert disabled["disabled"] is True
    resp = await stack.req("GET", "/api/v1/whoami", token=bob)
    assert resp.status_code == 401 and "disabled" in resp.text
    await stack.ok("POST", "/api/v1/users/bob/enable")
    assert await whoami(stack, bob) == 200

    removed = await stack.ok("DELETE", "/api/v1/users/alice")
    assert await whoami(stack, alice) == 401, "a deleted user's token stops working at once"
    assert any(t.startswith("token ") for t in removed["took"])
    assert "member of team devs" in removed["took"] and "role in project p1" in removed["took"]
    teams = (await stack.ok("GET", "/api/v1/teams"))["items"]
    assert teams[0]["members"] == ["bob"]
    project = await stack.ok("GET", "/api/v1/projects/p1")
    assert project["members"] == []
    assert "alice" not in [u["name"] for u in (await stack.ok("GET", "/api/v1/users"))["items"]]
    assert (await stack.req("DELETE", "/api/v1/users/alice")).status_code == 404

    # the last enabled platform admin cannot be disabled or deleted
    for method, path in (("POST", "/api/v1/users/admin/disable"), ("DELETE", "/api/v1/users/admin")):
        resp = await stack.req(method, path)
        assert resp.status_code == 409 and "last enabled platform admin" in resp.text
    assert await whoami(stack, stack.admin_token) == 200

    # every change is audited
    audit = (await stack.ok("GET", "/api/v1/audit", params={"since": "1h"}))["items"]
    actions = {(a["action"], a["result"]) for a in audit}
    assert ("DELETE /api/v1/users/alice", "200") in actions
    assert ("DELETE /api/v1/users/bob", "403") in actions
    assert ("POST /api/v1/users/bob/disable", "200") in actions


async def test_team_member_removal_and_team_deletion(stack: Stack) -> None:
    bob = await stack.user("bob")
    await stack.user("carol")
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["bob", "carol"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"team": "devs", "role": "user"})
    assert (await stack.req("GET", "/api/v1/projects/p1", token=bob)).status_code == 200

    for method, path in (("DELETE", "/api/v1/teams/devs/members/carol"), ("DELETE", "/api/v1/teams/devs")):
        assert (await stack.req(method, path, token=bob)).status_code == 403
    assert (await stack.ok("GET", "/api/v1/teams"))["items"][0]["members"] == ["bob", "carol"]

    team = await stack.ok("DELETE", "/api/v1/teams/devs/members/bob")
    assert team["members"] == ["carol"]
    assert (await stack.req("GET", "/api/v1/projects/p1", token=bob)).status_code == 403
    assert (await stack.req("DELETE", "/api/v1/teams/devs/members/bob")).status_code == 404

    removed = await stack.ok("DELETE", "/api/v1/teams/devs")
    assert "role in project p1" in removed["took"]
    assert (await stack.ok("GET", "/api/v1/teams"))["items"] == []
    assert (await stack.ok("GET", "/api/v1/projects/p1"))["members"] == []
