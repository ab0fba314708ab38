"""The gateway's door and its bus, with a sim agent (no Kubernetes): refusals, offline, isolation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.errors import Error as NatsError

from schemas import subjects
from schemas.gateway import GatewayControl, encode
from tests.harness import Stack, wait_for


async def _space(stack: Stack, tmp_path: Path) -> tuple[str, str]:
    await stack.connected("a", tmp_path / "a")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p", "clusters": ["a"]})
    bob, dave = await stack.user("bob"), await stack.user("dave")
    await stack.ok("PUT", "/api/v1/projects/p/members", json={"user": "bob", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/p/spaces", token=bob, json={"name": "s1", "cluster": "a"})
    await stack.wait_synced("space", "p", "s1")
    return bob, dave


async def test_the_door_refuses_with_kubernetes_statuses(stack: Stack, tmp_path: Path) -> None:
    bob, dave = await _space(stack, tmp_path)
    base = "/kubernetes/project/p/space/s1"

    async def status(path: str, token: str | None, code: int, **headers: str) -> str:
        async with stack.http(token) as http:
            if token is None:
                http.headers.pop("Authorization")
            resp = await http.get(base + path, headers=headers)
        assert resp.status_code == code, resp.text
        body = resp.json()
        assert body["kind"] == "Status" and body["code"] == code
        return str(body["message"])

    assert "missing API token" in await status("/api", None, 401)
    assert "token" in await status("/api", "tat_nope", 401)
    assert "dave" in await status("/api", dave, 403)
    assert "impersonation is not allowed" in await status("/api", bob, 403, **{"Impersonate-User": "admin"})
    spdy = await status("/api/v1/namespaces/x/pods/p/exec", bob, 400, Connection="Upgrade", Upgrade="SPDY/3.1")
    assert "kubectl 1.31 or newer" in spdy
    # The request reaches the agent, which says why it cannot serve it (a sim cluster has no API server).
    assert "sim driver" in await status("/api", bob, 501)
    assert "not 'default'" in await status("/api/v1/namespaces/default/pods", bob, 403)
    async with stack.http(bob) as http:
        resp = await http.get("/kubernetes/project/p/cluster/s1/api")
    assert resp.status_code == 404 and "unknown kind" in resp.json()["message"]

    # The cluster goes away: an immediate, clear answer (never a hang).
    stack.agents[0].stop()
    await stack.wait_online("a", online=False, timeout=20)
    text = await status("/api", bob, 503)
    assert "cluster 'a' is offline since" in text


async def test_only_the_clusters_agent_can_serve_its_gateway(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("a", tmp_path / "a")
    await stack.connected("b", tmp_path / "b")
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await stack.nc_as_agent_of("b", tmp_path / "b", error_cb=on_error)
    try:

        async def refused(action: str, attempt: object) -> None:
            before = len(errors)
            try:
                if asyncio.iscoroutine(attempt):
                    await attempt
                await nc.flush()
            except NatsError as exc:
                errors.append(str(exc))
            await wait_for(lambda: len(errors) > before, timeout=5, what=f"the broker to refuse: {action}")
            assert "permissions violation" in errors[-1].lower(), errors[-1]

        await refused("subscribe to a's gateway requests", nc.subscribe(subjects.gateway_requests("a")))
        await refused("subscribe to all of a's gateway", nc.subscribe(subjects.gateway_agent_inbound("a")))
        await refused("answer a's streams", nc.publish(subjects.gateway_frames("a", "abc.1"), b"x"))
        await refused("read a's answers", nc.subscribe(subjects.gateway_agent_outbound("a")))
        await refused("read every answer", nc.subscribe("tether.gwr.>"))
        control = encode(GatewayControl(stream="abc.1", cancel=True))
        await refused("cancel a's streams", nc.publish(subjects.gateway_control("a"), control))
        await refused("send requests to its own agent", nc.publish(subjects.gateway_requests("b"), b"x"))
        # ...while its own gateway subjects work.
        own = len(errors)
        await nc.subscribe(subjects.gateway_agent_inbound("b"))
        await nc.publish(subjects.gateway_frames("b", "abc.1"), b"x")
        await nc.flush()
        await asyncio.sleep(0.3)
        assert errors[own:] == []
    finally:
        await nc.close()
