"""Promise 6: an agent's credentials allow only its own cluster's subjects, enforced by the broker."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.errors import Error as NatsError

from schemas import subjects
from schemas.credentials import jwt_times, read_creds
from tests.harness import Stack, wait_for


async def test_an_agent_is_confined_to_its_own_subjects(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("a", tmp_path / "a")
    await stack.connected("b", tmp_path / "b")
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await stack.nc_as_agent_of("a", tmp_path / "a", error_cb=on_error)
    try:

        async def refused(action: str, attempt: object) -> None:
            before = len(errors)
            try:
                result = attempt() if callable(attempt) else attempt
                if asyncio.iscoroutine(result):
                    await result
                await nc.flush()
            except NatsError as exc:
                errors.append(str(exc))
            await wait_for(lambda: len(errors) > before, timeout=5, what=f"the broker to refuse: {action}")
            assert "permissions violation" in errors[-1].lower() or "timeout" in errors[-1].lower(), errors[-1]

        await refused("subscribe to b's desired state", nc.subscribe(subjects.desired_records("b")))
        await refused("publish b's heartbeat", nc.publish(subjects.heartbeat("b"), b"{}"))
        await refused("publish b's events", nc.publish(subjects.evt("b", subjects.EVT_INVENTORY), b"{}"))
        await refused(
            "ask lifecycle to record b's result",
            nc.publish(subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, "b"), b"{}"),
        )
        b_stream = subjects.desired_stream("b")
        await refused(
            "create b's consumer",
            nc.publish(f"$JS.API.CONSUMER.CREATE.{b_stream}.agent-b.{subjects.desired_records('b')}", b"{}"),
        )
        await refused("pull b's consumer", nc.publish(f"$JS.API.CONSUMER.MSG.NEXT.{b_stream}.agent-b", b"{}"))
        await refused("read the registry's KV", nc.publish("$JS.API.DIRECT.GET.KV_tether-clusters", b"{}"))
        await refused("watch another bucket", nc.subscribe("$KV.tether-presence.>"))
        await refused("call a platform endpoint", nc.publish(subjects.Registry.CLUSTER_CREATE, b"{}"))
        await refused("impersonate the API", nc.publish(subjects.Access.USER_CREATE, b"{}"))
        await refused("listen to everything", nc.subscribe(">"))
        await refused("read other agents' replies", nc.subscribe("_INBOX.>"))
        # ...while its own subjects still work.
        own = len(errors)
        await nc.publish(subjects.heartbeat("a"), b"{}")
        await nc.subscribe(subjects.control("a"))
        await nc.flush()
        await asyncio.sleep(0.3)
        assert errors[own:] == []
    finally:
        await nc.close()
    # b is untouched, a is still served.
    assert (await stack.cluster("a"))["online"] and (await stack.cluster("b"))["online"]


async def test_a_disconnected_agent_is_cut_off_and_cannot_reconnect(stack: Stack, tmp_path: Path) -> None:
    agent = await stack.connected("a", tmp_path / "a")
    await stack.ok("POST", "/api/v1/clusters/a/disconnect")
    assert await agent.wait_exit() == 2
    with pytest.raises(Exception, match="Authorization Violation"):
        await stack.nc_as_agent_of("a", tmp_path / "a", allow_reconnect=False, max_reconnect_attempts=0)
    again = stack.agent(tmp_path / "a")
    assert await again.wait_exit() == 2
    assert "refused the credentials of cluster 'a'" in again.output() or "disconnected" in again.output()


async def test_an_expired_connect_token_is_refused(stack: Stack, tmp_path: Path) -> None:
    info = await stack.connect_cluster("late", token_ttl=1)
    await asyncio.sleep(2.5)  # the token's validity is the thing under test
    agent = stack.agent(tmp_path / "late", info["token"])
    assert await agent.wait_exit() == 2
    assert "NATS refused the connect token of cluster 'late'" in agent.output()
    assert (await stack.cluster("late"))["state"] == "pending"


async def test_renewal_keeps_commands_flowing(tmp_path: Path) -> None:
    stack = Stack(tmp=tmp_path, env_overrides={"TETHER_AGENT_CRED_TTL": "6"})
    try:
        await stack.start()
        state = tmp_path / "c1"
        await stack.connected("c1", state)
        first_jwt, _ = read_creds((state / "nats.creds").read_text())
        issued, expires = jwt_times(first_jwt)
        assert expires - issued == pytest.approx(6, abs=1)
        await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
        names = []
        for i in range(8):  # across at least one renewal and one expiry of the first JWT
            names.append(f"t{i}")
            await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": f"t{i}"})
            await asyncio.sleep(1)
        for name in names:
            await stack.wait_synced("space", "p1", name)
        renewed, _ = read_creds((state / "nats.creds").read_text())
        assert renewed != first_jwt
        assert jwt_times(renewed)[0] > issued
        assert (await stack.cluster("c1"))["online"]
        assert "renewed" in stack.agents[0].output()
    finally:
        stack.stop()
