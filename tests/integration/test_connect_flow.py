"""The connect flow against a real nats-server: token -> agent -> online -> offline -> online."""

from __future__ import annotations

import time
from pathlib import Path

from nats.aio.msg import Msg

from schemas import subjects
from schemas.messages import ClusterEvent, decode
from services.bus.endpoints import ping
from tests.harness import Proc, Stack, wait_for

FIELDS = {
    "name",
    "display_name",
    "description",
    "labels",
    "local",
    "online",
    "last_seen",
    "connected_since",
    "agent_version",
    "kubernetes_version",
    "node_count",
    "capacity",
    "conditions",
}


async def test_connect_heartbeat_offline_online(stack: Stack, tmp_path: Path) -> None:
    nc = await stack.nc()
    events: list[ClusterEvent] = []

    async def collect(msg: Msg) -> None:
        events.append(decode(msg.data, ClusterEvent))

    await nc.subscribe(subjects.public_event("cluster.*"), cb=collect)
    try:
        info = await stack.connect_cluster("edge-1", display_name="Edge one", labels={"env": "dev"})
        assert info["cluster"]["state"] == "pending"
        assert info["agent_command"].startswith(f"tether agent run --server {stack.nats_url} --token tct.edge-1.")

        agent = stack.agent(tmp_path / "edge-1", info["token"])
        cluster = await stack.wait_online("edge-1", timeout=15)
        assert cluster.keys() >= FIELDS
        assert cluster["display_name"] == "Edge one" and cluster["labels"] == {"env": "dev"}
        assert cluster["node_count"] == 3 and cluster["capacity"]["cpu"] > 0
        assert cluster["agent_version"] and cluster["kubernetes_version"]
        assert {c["type"]: c["status"] for c in cluster["conditions"]} == {
            "LinkUp": "True",
            "Healthy": "True",
        }
        # credentials are kept, the one-time token is spent
        creds = tmp_path / "edge-1" / "credentials.json"
        assert creds.exists() and oct(creds.stat().st_mode & 0o777) == "0o600"
        assert info["token"] not in creds.read_text()

        # Stop the agent: offline within the budget (3 s in tests) after its last heartbeat.
        last_seen_before = (await stack.cluster("edge-1"))["last_seen"]
        agent.stop()
        stopped = time.monotonic()
        offline = await stack.wait_online("edge-1", online=False, timeout=10)
        detected_after = time.monotonic() - stopped
        assert detected_after < 3.0 + 0.5 + 2.0, detected_after  # offline_after + heartbeat + sweep slack
        assert offline["last_seen"] >= last_seen_before
        link = next(c for c in offline["conditions"] if c["type"] == "LinkUp")
        assert link["status"] == "False" and link["reason"] == "HeartbeatMissed"

        # Start it again with no token: its stored credentials suffice.
        stack.agent(tmp_path / "edge-1")
        await stack.wait_online("edge-1", timeout=15)

        kinds = await wait_for(
            lambda: [e.kind for e in events if e.cluster == "edge-1"][:5] if len(events) >= 5 else None,
            what="cluster events",
        )
        assert kinds == ["registered", "connected", "online", "offline", "online"]
    finally:
        await nc.close()


async def disconnected(stack: Stack, name: str, state_dir: Path) -> Proc:
    """Connect ``name``'s agent, wait until it is online, disconnect the cluster; the agent, stopped."""
    info = await stack.connect_cluster(name)
    agent = stack.agent(state_dir, info["token"])
    await stack.wait_online(name)
    async with stack.http() as http:
        resp = await http.post(f"/api/v1/clusters/{name}/disconnect")
        assert resp.status_code == 200, resp.text
    assert await agent.wait_exit() == 2
    return agent


async def test_disconnect_stops_the_agent_and_refuses_it_later(stack: Stack, tmp_path: Path) -> None:
    agent = await disconnected(stack, "edge-2", tmp_path / "edge-2")
    assert "disconnected" in agent.output()
    cluster = await stack.wait_online("edge-2", online=False, timeout=5)
    assert cluster["state"] == "disconnected"
    # Restarting it with the old credentials is refused with a clear message.
    again = stack.agent(tmp_path / "edge-2")
    # nats-server closes a refused connection with the client's PING still unread, so the kernel may send a
    # reset that drops its "Authorization Violation" before the agent reads it; under load several attempts in
    # a row can end so (the agent then retries with backoff, capped at 15 s), hence a deadline of a few attempts.
    assert await again.wait_exit(timeout=60) == 2
    assert "disconnected" in again.output()


async def test_a_disconnected_agent_stays_refused_after_nats_and_the_registry_restart(
    stack: Stack, tmp_path: Path
) -> None:
    await disconnected(stack, "edge-4", tmp_path / "edge-4")
    # A restart of the platform: the registry serves first and pushes the account (with the revocation) after.
    assert stack.nats is not None
    stack.services["registry"].stop()
    stack.nats.stop()
    stack.nats.start()
    await stack.nats.wait_ready()
    stack.restart_service("registry")
    nc = await stack.nc()
    try:
        await wait_for(lambda: ping(nc, "registry"), what="the registry answering again", timeout=60)
    finally:
        await nc.close()
    again = stack.agent(tmp_path / "edge-4")
    assert await again.wait_exit(timeout=60) == 2
    assert "disconnected" in again.output()


async def test_duplicate_guard_names_the_cluster_it_is_connected_as(stack: Stack, tmp_path: Path) -> None:
    first = await stack.connect_cluster("edge-a")
    uid = {"TETHER_SIM_CLUSTER_UID": "same-physical-cluster"}
    stack.agent(tmp_path / "a", first["token"], extra_env=uid)
    await stack.wait_online("edge-a")
    second = await stack.connect_cluster("edge-b")
    dup = stack.agent(tmp_path / "b", second["token"], extra_env=uid)
    assert await dup.wait_exit() == 2
    assert "already connected as 'edge-a'" in dup.output()
    b = await stack.cluster("edge-b")
    assert b["state"] == "pending" and not b["online"]
    # The refused attempt did not spend edge-b's token: a different cluster can still use it.
    ok = stack.agent(tmp_path / "b2", second["token"], extra_env={"TETHER_SIM_CLUSTER_UID": "another"})
    await stack.wait_online("edge-b")
    assert ok.running
