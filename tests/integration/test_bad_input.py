"""Bad input gets a clear error, changes nothing, and never takes a service down."""

from __future__ import annotations

from pathlib import Path

import nats
import pytest

from schemas import subjects
from services.bus.endpoints import ERROR_CODE, ERROR_TEXT
from tests.harness import Stack


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"name": "Edge_1"}, "invalid cluster name 'Edge_1'"),
        ({"name": "x" * 64}, "name"),
        ({"name": "ok", "labels": {"bad key!": "v"}}, "invalid label key"),
        ({"name": "ok", "surprise": 1}, "surprise"),
        ({}, "name"),
    ],
)
async def test_connect_rejects_bad_input(stack: Stack, body: dict[str, object], message: str) -> None:
    async with stack.http() as http:
        resp = await http.post("/api/v1/clusters", json=body)
        assert resp.status_code == 400, resp.text
        assert message in resp.json()["error"]["message"]
        listed = await http.get("/api/v1/clusters")
        assert listed.json()["items"] == []


async def test_unknown_cluster_is_404_with_its_name(stack: Stack) -> None:
    async with stack.http() as http:
        resp = await http.get("/api/v1/clusters/nope")
        assert resp.status_code == 404
        assert resp.json()["error"]["message"] == "cluster 'nope' not found"
        resp = await http.post("/api/v1/clusters/nope/disconnect")
        assert resp.status_code == 404


async def test_requests_without_a_valid_token_get_401(stack: Stack) -> None:
    async with stack.http(token="tat_" + "x" * 40) as http:
        assert (await http.get("/api/v1/clusters")).status_code == 401
    async with stack.http(token="garbage") as http:
        resp = await http.get("/api/v1/clusters")
        assert resp.status_code == 401 and "malformed" in resp.json()["error"]["message"]


async def test_spent_and_wrong_connect_tokens_are_refused(stack: Stack, tmp_path: Path) -> None:
    info = await stack.connect_cluster("edge-1")
    prefix, cluster, secret, jwt = info["token"].split(".", 3)
    # A wrong secret does not match the token's bootstrap identity: the broker itself refuses it.
    wrong = stack.agent(tmp_path / "w", f"{prefix}.{cluster}.{secret[:-3]}abc.{jwt}")
    assert await wrong.wait_exit() == 2
    assert "NATS refused the connect token of cluster 'edge-1': it is wrong or expired" in wrong.output()
    # Without its bootstrap identity a token cannot even reach the platform.
    bare = stack.agent(tmp_path / "b", f"{prefix}.{cluster}.{secret}")
    assert await bare.wait_exit() == 2
    assert "NATS requires credentials" in bare.output()
    stack.agent(tmp_path / "ok", info["token"])
    await stack.wait_online("edge-1")
    spent = stack.agent(tmp_path / "again", info["token"])
    assert await spent.wait_exit() == 2
    assert "connect token for cluster 'edge-1' was already used" in spent.output()
    assert (await stack.cluster("edge-1"))["online"]


async def test_malformed_messages_get_an_error_and_services_keep_running(stack: Stack, tmp_path: Path) -> None:
    info = await stack.connect_cluster("edge-1")
    stack.agent(tmp_path / "a", info["token"])
    await stack.wait_online("edge-1")
    nc = await stack.nc()
    # Agent endpoints answer only into the calling cluster's inbox.
    as_agent = await nats.connect(
        stack.nats_url, user_credentials=str(stack.auth / "platform.creds"), inbox_prefix=b"_INBOX_edge-1"
    )
    try:
        for conn, subject in (
            (nc, subjects.Registry.CLUSTER_CREATE),
            (as_agent, subjects.agent_call(subjects.Registry.AGENT_BOOTSTRAP, "edge-1")),
            (nc, subjects.Health.PRESENCE_GET),
            (nc, subjects.Access.AUTHENTICATE),
        ):
            for payload in (b"", b"{not json", b'{"type":"cluster-create.v1","name":42}', b"\xff\xfe"):
                reply = await conn.request(subject, payload, timeout=5)
                assert reply.headers and reply.headers[ERROR_CODE] == "400", (subject, payload, reply.headers)
                assert "message" in reply.headers[ERROR_TEXT]
        # garbage and lies on the heartbeat subjects are dropped, with a log line naming the problem
        await nc.publish(subjects.heartbeat("edge-1"), b"{oops")
        await nc.publish(subjects.heartbeat("edge-9"), b'{"type":"heartbeat.v1"}')
        await nc.flush()
    finally:
        await nc.close()
        await as_agent.close()
    for name, proc in stack.services.items():
        assert proc.running, f"{name} died"
    cluster = await stack.cluster("edge-1")
    assert cluster["online"]
    assert "dropped heartbeat on tether.hb.edge-1: malformed Heartbeat" in stack.services["health"].output()
    async with stack.http() as http:
        names = [c["name"] for c in (await http.get("/api/v1/clusters")).json()["items"]]
    assert names == ["edge-1"]
