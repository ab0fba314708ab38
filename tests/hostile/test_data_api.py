"""Hostile input at the HTTP API: strict booleans, bounded bodies and queries, and what non-admins may see."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.harness import Stack, wait_for

pytestmark = pytest.mark.hostile


async def test_booleans_are_strict(stack: Stack) -> None:
    for value in ("yes", "true", 1, "1", None):
        resp = await stack.req("POST", "/api/v1/users", json={"name": "mallory", "platform_admin": value})
        assert resp.status_code == 400, (value, resp.text)
        assert "platform_admin" in resp.json()["error"]["message"]
    resp = await stack.req("POST", "/api/v1/clusters", json={"name": "cx", "local": "yes"})
    assert resp.status_code == 400 and "local" in resp.text
    users = await stack.ok("GET", "/api/v1/users")
    assert "mallory" not in {u["name"] for u in users["items"]}
    made = await stack.ok("POST", "/api/v1/users", json={"name": "mallory", "platform_admin": False})
    assert made["user"]["platform_admin"] is False


async def test_huge_label_maps_are_refused_not_500(stack: Stack) -> None:
    ten_mb = {f"k{i}": "v" * 60 for i in range(150_000)}  # ~10 MB of JSON
    big = await stack.req("POST", "/api/v1/clusters", json={"name": "cx", "labels": ten_mb})
    assert big.status_code == 413, big.text
    many = await stack.req("POST", "/api/v1/clusters", json={"name": "cx", "labels": {f"k{i}": "v" for i in range(65)}})
    assert many.status_code == 400 and "labels" in many.text
    long_value = await stack.req("POST", "/api/v1/clusters", json={"name": "cx", "labels": {"k": "v" * 64}})
    assert long_value.status_code == 400
    selector = await stack.req(
        "POST", "/api/v1/projects", json={"name": "p1", "cluster_selector": {f"k{i}": "v" for i in range(65)}}
    )
    assert selector.status_code == 400
    members = await stack.req("POST", "/api/v1/teams", json={"name": "t", "members": ["u"] * 1001})
    assert members.status_code == 400
    quota = await stack.req("POST", "/api/v1/projects", json={"name": "p1", "quota": {"cpu": 1e300}})
    assert quota.status_code == 400
    assert (await stack.req("GET", "/api/v1/clusters/cx")).status_code == 404  # nothing was created
    ok = await stack.ok("POST", "/api/v1/clusters", json={"name": "cx", "labels": {"env": "dev"}})
    assert ok["cluster"]["labels"] == {"env": "dev"}


async def test_chunked_oversized_body_is_refused(stack: Stack) -> None:
    async def chunks():  # type: ignore[no-untyped-def]
        yield b'{"name": "cx", "labels": {'
        for i in range(20_000):
            yield f'"k{i}": "{"v" * 60}",'.encode()
        yield b'"end": "x"}}'

    async with stack.http(stack.admin_token) as client:
        resp = await client.post("/api/v1/clusters", content=chunks(), headers={"content-type": "application/json"})
    assert resp.status_code == 413, resp.text


@pytest.mark.parametrize("since", ["99999999999d", "9" * 400 + "s", "0001-01-01T00:00:00"])
async def test_audit_since_is_bounded(stack: Stack, since: str) -> None:
    resp = await stack.req("GET", "/api/v1/audit", params={"since": since})
    assert resp.status_code in (200, 400), resp.text
    if since.endswith(("d", "s")):
        assert resp.status_code == 400
    assert (await stack.req("GET", "/api/v1/audit", params={"since": "1h"})).status_code == 200


async def test_non_admins_see_only_their_projects_clusters_and_tenants(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    await stack.connected("c2", tmp_path / "c2")
    bob, eve = await stack.user("bob"), await stack.user("eve")
    await stack.ok("POST", "/api/v1/projects", json={"name": "secret", "clusters": ["c1"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "open", "clusters": ["c1", "c2"]})
    await stack.ok("PUT", "/api/v1/projects/secret/members", json={"user": "bob", "role": "user"})
    await stack.ok("PUT", "/api/v1/projects/open/members", json={"user": "eve", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/secret/tenants", token=bob, json={"name": "hidden", "cluster": "c1"})
    await stack.ok("POST", "/api/v1/projects/open/tenants", token=eve, json={"name": "shown", "cluster": "c1"})
    await stack.wait_synced("tenant", "secret", "hidden")
    await stack.wait_synced("tenant", "open", "shown")

    async def planes_on_c1() -> list[str] | None:  # the admin sees both control planes once heartbeats carry them
        c1 = await stack.cluster("c1")
        names = sorted(f"{c['project']}/{c['name']}" for c in c1["control_planes"])
        return names if len(names) == 2 else None

    assert await wait_for(planes_on_c1, timeout=20, what="both control planes on c1") == [
        "open/shown",
        "secret/hidden",
    ]
    listed = await stack.ok("GET", "/api/v1/clusters", token=eve)
    c1 = next(c for c in listed["items"] if c["name"] == "c1")
    assert [f"{c['project']}/{c['name']}" for c in c1["control_planes"]] == ["open/shown"]
    assert "secret" not in str(listed)
    single = await stack.ok("GET", "/api/v1/clusters/c1", token=eve)
    assert "secret" not in str(single)
    # bob's project may use c1 only: c2 is neither listed nor readable, as if it did not exist
    bobs = await stack.ok("GET", "/api/v1/clusters", token=bob)
    assert [c["name"] for c in bobs["items"]] == ["c1"]
    assert (await stack.req("GET", "/api/v1/clusters/c2", token=bob)).status_code == 404
    nobody = await stack.user("nobody")
    assert (await stack.ok("GET", "/api/v1/clusters", token=nobody))["items"] == []
    tenants = await stack.ok("GET", "/api/v1/tenants", token=eve)
    assert [t["name"] for t in tenants["items"]] == ["shown"]
