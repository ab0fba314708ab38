"""Projects and clusters through the API: update, delete (with the cascade through lifecycle), remove,
re-connect; the defaults live in lifecycle; owners get admin however they are members. Deletions leave
no orphan in KV, in the streams or on the (sim) cluster."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.drivers.sim import read_state
from schemas import subjects
from schemas.messages import WorkloadRecord, decode
from tests.bucket_reading import live_entries
from tests.harness import Stack, wait_for

GI = 1024**3


async def kv_keys(stack: Stack, bucket: str) -> set[str]:
    nc = await stack.nc()
    try:
        return set(await live_entries(nc.jetstream(), bucket))
    finally:
        await nc.close()


async def pending_commands(stack: Stack, cluster: str) -> int:
    """The cluster's desired-state records its agent has not reported done (each is a command waiting)."""
    nc = await stack.nc()
    try:
        js = nc.jetstream()
        info = await js.stream_info(subjects.desired_stream(cluster), subjects_filter=subjects.desired_records(cluster))
        pending = 0
        for subject in info.state.subjects or {}:
            msg = await js.get_msg(subjects.desired_stream(cluster), subject=subject)
            if not msg.data:
                continue
            record = decode(msg.data, WorkloadRecord)
            pending += record.observed is None or record.observed.generation < record.generation
        return pending
    finally:
        await nc.close()


async def consumers(stack: Stack, cluster: str) -> list[str]:
    nc = await stack.nc()
    try:
        return [c.name for c in await nc.jetstream().consumers_info(subjects.desired_stream(cluster))]
    finally:
        await nc.close()


async def test_project_update_and_cascade_delete(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "c1"
    await stack.connected("c1", state)
    await stack.connected("c2", tmp_path / "c2")
    bob = await stack.user("bob")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"], "quota": {"tenants": 1}})
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"user": "bob", "role": "admin"})

    # only platform admins change a project's quota and clusters; a refusal changes nothing
    patch: dict[str, Any] = {"quota": {"tenants": 5}, "clusters": ["c1", "c2"]}
    assert (await stack.req("PATCH", "/api/v1/projects/p1", token=bob, json=patch)).status_code == 403
    assert (await stack.ok("GET", "/api/v1/projects/p1"))["quota"]["tenants"] == 1
    assert (await stack.req("PATCH", "/api/v1/projects/p1", json={"clusters": ["nope"]})).status_code == 404
    updated = await stack.ok("PATCH", "/api/v1/projects/p1", json=patch | {"cluster_selector": {"env": "dev"}})
    assert updated["quota"]["tenants"] == 5 and updated["clusters"] == ["c1", "c2"]
    assert updated["cluster_selector"] == {"env": "dev"}

    await stack.ok("POST", "/api/v1/projects/p1/tenants", token=bob, json={"name": "t1", "cluster": "c1", "cpu": 2})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", token=bob, json={"name": "t2", "cluster": "c1"})
    await stack.ok("POST", "/api/v1/projects/p1/spaces", token=bob, json={"name": "s1", "cluster": "c1"})
    for kind, name in (("tenant", "t1"), ("tenant", "t2"), ("space", "s1")):
        await stack.wait_synced(kind, "p1", name)
    assert len(read_state(state)["objects"]) == 3

    # refused while it has tenants and spaces (and nothing changes), and refused to a project admin
    resp = await stack.req("DELETE", "/api/v1/projects/p1")
    assert resp.status_code == 409 and "tenant t1" in resp.text and "--cascade" in resp.text
    assert (await stack.req("DELETE", "/api/v1/projects/p1?cascade=true", token=bob)).status_code == 403
    assert (await stack.workload("tenant", "p1", "t1")) is not None

    first = await stack.req("DELETE", "/api/v1/projects/p1?cascade=true")
    assert first.status_code == 202 and sorted(first.json()["remaining"]) == ["space s1", "tenant t1", "tenant t2"]
    # nothing new while it is being deleted
    late = await stack.req("POST", "/api/v1/projects/p1/tenants", token=bob, json={"name": "late", "cluster": "c1"})
    assert late.status_code == 409 and "being deleted" in late.text

    async def deleted() -> dict[str, Any] | None:
        resp = await stack.req("DELETE", "/api/v1/projects/p1?cascade=true")
        assert resp.status_code in (200, 202), resp.text
        return dict(resp.json()) if resp.status_code == 200 else None

    done = await wait_for(deleted, timeout=30, what="project p1 deleted with its tenants and spaces")
    assert done["deleted"] is True and "member user bob" in done["took"]
    assert (await stack.req("GET", "/api/v1/projects/p1")).status_code == 404

    # no orphan: the project, its members, no live desired state, no command waiting, nothing on the cluster
    assert "p1" not in await kv_keys(stack, subjects.BUCKET_PROJECTS)
    assert "p1" not in await kv_keys(stack, subjects.BUCKET_MEMBERS)
    assert (await stack.ok("GET", "/api/v1/tenants"))["items"] == []
    assert (await stack.ok("GET", "/api/v1/spaces"))["items"] == []
    assert await pending_commands(stack, "c1") == 0
    assert read_state(state)["objects"] == {}
    audit = {a["action"] for a in (await stack.ok("GET", "/api/v1/audit", params={"since": "1h"}))["items"]}
    assert "DELETE /api/v1/projects/p1" in audit


async def test_defaults_live_in_lifecycle_and_owners_get_admin(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    erin = await stack.user("erin")
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["erin"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"team": "devs", "role": "user"})

    t = await stack.ok("POST", "/api/v1/projects/p1/tenants", token=erin, json={"name": "t1", "cpu": 2})
    assert t["desired"]["cpu"] == 2 and t["desired"]["memory"] == 2 * GI, "cpu given: memory is the default"
    s = await stack.ok("POST", "/api/v1/projects/p1/spaces", token=erin, json={"name": "s1", "memory": 3 * GI})
    assert s["desired"]["cpu"] == 0.5 and s["desired"]["memory"] == 3 * GI
    members = {m["subject"]: m["access"] for m in t["desired"]["members"]}
    assert members == {"team:devs": "view", "user:erin": "admin"}, "an owner through a team administers it"

    # leaving the team takes the owner's admin away at the next apply
    await stack.ok("DELETE", "/api/v1/teams/devs/members/erin")

    async def owner_gone() -> bool:
        w = await stack.workload("tenant", "p1", "t1")
        return w is not None and "user:erin" not in {m["subject"] for m in w["desired"]["members"]}

    await wait_for(owner_gone, timeout=15, what="erin's owner access removed")

    # joining the team again gives it back (adding a team member is announced too)
    await stack.ok("POST", "/api/v1/teams/devs/members", json={"user": "erin"})

    async def owner_back() -> bool:
        w = await stack.workload("tenant", "p1", "t1")
        return w is not None and {"subject": "user:erin", "access": "admin"} in w["desired"]["members"]

    await wait_for(owner_back, timeout=15, what="erin's owner access back")


async def test_cluster_update_remove_and_reconnect(stack: Stack, tmp_path: Path) -> None:
    agent = await stack.connected("c1", tmp_path / "c1")
    bob = await stack.user("bob")
    patch = {"labels": {"env": "prod"}, "display_name": "Cluster one"}
    assert (await stack.req("PATCH", "/api/v1/clusters/c1", token=bob, json=patch)).status_code == 403
    assert (await stack.cluster("c1"))["labels"] == {}
    c = await stack.ok("PATCH", "/api/v1/clusters/c1", json=patch)
    assert c["labels"] == {"env": "prod"} and c["display_name"] == "Cluster one" and c["online"]
    bad = await stack.req("PATCH", "/api/v1/clusters/c1", json={"labels": {"bad key!": "x"}})
    assert bad.status_code == 400

    # an existing name is connected again only with rotate_token
    again = await stack.req("POST", "/api/v1/clusters", json={"name": "c1"})
    assert again.status_code == 409 and "already connected" in again.text
    await stack.connect_cluster("pend")
    again = await stack.req("POST", "/api/v1/clusters", json={"name": "pend"})
    assert again.status_code == 409 and "--rotate-token" in again.text
    await stack.connect_cluster("pend", rotate_token=True)

    # removal: refused while connected, refused to non-admins, refused while something is placed there
    resp = await stack.req("DELETE", "/api/v1/clusters/c1")
    assert resp.status_code == 409 and "disconnect it first" in resp.text
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "s1", "cluster": "c1"})
    await stack.wait_synced("space", "p1", "s1")
    await stack.ok("POST", "/api/v1/clusters/c1/disconnect")
    await agent.wait_exit()
    assert (await stack.req("DELETE", "/api/v1/clusters/c1", token=bob)).status_code == 403
    resp = await stack.req("DELETE", "/api/v1/clusters/c1")
    assert resp.status_code == 409 and "space p1/s1" in resp.text

    # a space whose cluster is gone for good: its delete waits in the desired state; the removal ends it
    await stack.ok("DELETE", "/api/v1/projects/p1/spaces/s1")
    assert await pending_commands(stack, "c1") == 1
    removed = await stack.ok("DELETE", "/api/v1/clusters/c1")
    assert "space p1/s1 (deletion never confirmed)" in removed["took"]
    assert await pending_commands(stack, "c1") == 0
    assert subjects.agent_consumer("c1") not in await consumers(stack, "c1")
    assert (await stack.req("GET", "/api/v1/clusters/c1")).status_code == 404
    assert "c1" not in [c["name"] for c in (await stack.ok("GET", "/api/v1/clusters"))["items"]]
    assert (await stack.ok("GET", "/api/v1/spaces"))["items"] == []
    assert "c1" not in await kv_keys(stack, subjects.BUCKET_CLUSTERS)

    async def no_presence() -> bool:
        return "c1" not in await kv_keys(stack, subjects.BUCKET_PRESENCE)

    await wait_for(no_presence, timeout=10, what="c1's presence forgotten")
    # its agent stays refused: the old credentials do not connect again
    old = stack.agent(tmp_path / "c1", name="agent-c1-again")
    assert await old.wait_exit(timeout=30) != 0
    # and the name can be connected anew
    await stack.connect_cluster("c1")
