"""The web UI's API: the live event stream (filtered per caller) and a cluster's history."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from nats.js.errors import NotFoundError

from schemas import subjects
from tests.harness import Stack, wait_for

Event = tuple[str, dict[str, Any]]


@contextlib.asynccontextmanager
async def listening(stack: Stack, token: str) -> AsyncIterator[list[Event]]:
    """Read ``/api/v1/events/stream`` as ``token`` in the background; yield the events seen so far."""
    seen: list[Event] = []

    async def read() -> None:
        async with (
            httpx.AsyncClient(base_url=stack.api, timeout=httpx.Timeout(10, read=None)) as http,
            http.stream("GET", "/api/v1/events/stream", headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            assert resp.status_code == 200, await resp.aread()
            assert resp.headers["content-type"].startswith("text/event-stream")
            kind = "message"
            async for line in resp.aiter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    seen.append((kind, json.loads(line.split(":", 1)[1])))

    task = asyncio.create_task(read())
    try:
        await wait_for(lambda: task.done() or any(k == "ready" for k, _ in seen), what="the stream to be ready")
        if task.done():
            task.result()
        yield seen
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def kinds(events: list[Event], project: str | None = None) -> set[str]:
    return {k for k, data in events if project is None or data.get("project") == project}


async def test_the_event_stream_shows_each_user_only_what_they_may_see(stack: Stack, tmp_path: Path) -> None:
    resp = await stack.req("GET", "/api/v1/events/stream", token="tat_nope")
    assert resp.status_code == 401 and resp.json()["error"]["code"] == "401"

    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})  # any cluster, c2 too once it exists
    await stack.ok("POST", "/api/v1/projects", json={"name": "p2", "clusters": ["c1"]})
    viewer = await stack.user("vic")
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"user": "vic", "role": "viewer"})
    outsider = await stack.user("eve")

    async with (
        listening(stack, stack.admin_token) as admin_seen,
        listening(stack, viewer) as viewer_seen,
        listening(stack, outsider) as outsider_seen,
    ):
        await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t1"})
        await stack.ok("POST", "/api/v1/projects/p2/spaces", json={"name": "s2"})
        await stack.connect_cluster("c2")
        await wait_for(
            lambda: {"tenant.ready"} <= kinds(admin_seen, "p1") and {"space.ready"} <= kinds(admin_seen, "p2"),
            what="the admin to see both projects' events",
        )
        await wait_for(lambda: "tenant.ready" in kinds(viewer_seen, "p1"), what="the viewer to see p1's tenant")
        await wait_for(
            lambda: "cluster.registered" in kinds(admin_seen) and "cluster.registered" in kinds(viewer_seen),
            what="the admin and the member of a project that may use c2 to see its events",
        )
        assert kinds(viewer_seen, "p2") == set(), viewer_seen
        assert [e for e in outsider_seen if "project" in e[1]] == [], outsider_seen
        assert [e for e in outsider_seen if e[0].startswith("cluster.")] == [], "no project: no cluster events"
        tenant_ready = next(data for kind, data in viewer_seen if kind == "tenant.ready")
        assert tenant_ready["name"] == "t1" and tenant_ready["cluster"] == "c1"


async def test_a_clusters_history_lists_its_transitions_newest_first(stack: Stack, tmp_path: Path) -> None:
    agent = await stack.connected("c1", tmp_path / "c1")
    await stack.connected("c2", tmp_path / "c2")
    agent.stop()
    await stack.wait_online("c1", online=False)

    # Health writes the presence, then publishes the event: the history may be a moment behind the presence.
    async def offline_listed() -> dict[str, Any] | None:
        got = await stack.ok("GET", "/api/v1/clusters/c1/events")
        return got if got["items"] and got["items"][0]["kind"] == "offline" else None

    history = await wait_for(offline_listed, timeout=10, what="the offline event in c1's history")
    # "connected" (registry, on the agent's hello) and "online" (health, on its first heartbeat) may race.
    order = [e["kind"] for e in history["items"]]
    assert order[0] == "offline" and order[-1] == "registered" and sorted(order[1:3]) == ["connected", "online"], order
    assert history["truncated"] is False
    times = [e["at"] for e in history["items"]]
    assert times == sorted(times, reverse=True)

    latest = await stack.ok("GET", "/api/v1/clusters/c1/events", params={"limit": 1})
    assert [e["kind"] for e in latest["items"]] == ["offline"] and latest["truncated"] is True
    c2 = await stack.ok("GET", "/api/v1/clusters/c2/events", params={"hours": 1})
    assert sorted(e["kind"] for e in c2["items"]) == ["connected", "online", "registered"]

    viewer = await stack.user("vic")  # a cluster is visible to members of a project that may use it
    hidden = await stack.req("GET", "/api/v1/clusters/c1/events", token=viewer)
    assert hidden.status_code == 404
    await stack.ok("POST", "/api/v1/projects", json={"name": "pv", "clusters": ["c1"]})
    await stack.ok("PUT", "/api/v1/projects/pv/members", json={"user": "vic", "role": "viewer"})
    assert (await stack.ok("GET", "/api/v1/clusters/c1/events", token=viewer))["items"]
    assert (await stack.req("GET", "/api/v1/clusters/c2/events", token=viewer)).status_code == 404
    missing = await stack.req("GET", "/api/v1/clusters/nope/events")
    assert missing.status_code == 404 and "nope" in missing.json()["error"]["message"]
    bad = await stack.req("GET", "/api/v1/clusters/c1/events", params={"limit": 0})
    assert bad.status_code == 400


async def _last_event(stack: Stack, kind: str) -> dict[str, Any] | None:
    """The newest public event stored on ``tether.events.<kind>``, None when there is none."""
    nc = await stack.nc()
    try:
        msg = await nc.jetstream().get_msg(subjects.EVENTS_STREAM, subject=subjects.public_event(kind))
    except NotFoundError:
        return None
    finally:
        await nc.close()
    found: dict[str, Any] = json.loads(msg.data or b"{}")
    return found


async def test_a_sleep_is_announced_when_its_cluster_sleeps_the_tenant_not_when_asked(
    stack: Stack, tmp_path: Path
) -> None:
    agent = await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t1"})
    await stack.wait_synced("tenant", "p1", "t1")
    assert await wait_for(lambda: _last_event(stack, "tenant.ready"), what="t1's ready event")
    agent.stop()
    await stack.wait_online("c1", online=False)

    asked = await stack.ok("POST", "/api/v1/projects/p1/tenants/t1/sleep")
    assert asked["phase"] == "Sleeping", "the record shows what was asked at once"
    # Lifecycle answers once the command's writes are stored: an event for the request would be there now.
    assert await _last_event(stack, "tenant.sleeping") is None, "nothing slept yet: the cluster is offline"

    agent.start()
    slept = await wait_for(lambda: _last_event(stack, "tenant.sleeping"), timeout=30, what="the sleeping event")
    assert (slept["name"], slept["cluster"], slept["reason"]) == ("t1", "c1", "Applied")
    record = await stack.workload("tenant", "p1", "t1")
    assert record is not None and record["in_sync"], "announced once the cluster had done it"
