"""Any process can be killed -9; on restart nothing acknowledged is lost."""

from __future__ import annotations

from pathlib import Path

from tests.harness import Stack, wait_for


async def test_health_killed_keeps_presence_right(stack: Stack, tmp_path: Path) -> None:
    a = await stack.connect_cluster("edge-a")
    b = await stack.connect_cluster("edge-b")
    stack.agent(tmp_path / "a", a["token"])
    agent_b = stack.agent(tmp_path / "b", b["token"])
    await stack.wait_online("edge-a")
    await stack.wait_online("edge-b")
    before = await stack.cluster("edge-a")

    stack.services["health"].kill9()
    agent_b.stop()  # b goes silent while no health service is watching
    stack.restart_service("health")
    await stack.wait_healthy()

    # a stays online with the same connected_since; b is detected offline after the restart.
    after = await stack.wait_online("edge-a")
    assert after["connected_since"] == before["connected_since"]
    assert after["last_seen"] >= before["last_seen"]
    offline = await stack.wait_online("edge-b", online=False, timeout=10)
    assert offline["last_seen"] is not None


async def test_registry_killed_mid_flight_loses_no_cluster(stack: Stack, tmp_path: Path) -> None:
    infos = [await stack.connect_cluster(f"edge-{i}") for i in range(3)]
    stack.services["registry"].kill9()
    stack.restart_service("registry")
    await stack.wait_healthy()
    for i, info in enumerate(infos):
        stack.agent(tmp_path / str(i), info["token"])
    for i in range(3):
        await stack.wait_online(f"edge-{i}")

    async def listed() -> list[str] | None:
        async with stack.http() as http:
            return [c["name"] for c in (await http.get("/api/v1/clusters")).json()["items"]]

    assert await wait_for(listed) == ["edge-0", "edge-1", "edge-2"]
