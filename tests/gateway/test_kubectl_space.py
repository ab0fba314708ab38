"""kubectl through the platform into a space: real kubectl, platform, agent (kube driver), kube-apiserver."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml

from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import namespace_name
from tests.gateway.conftest import kube_agent, member_kubectl, wait_gateway_served
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube

CONFIGMAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
data:
  colour: blue
"""


async def line_with(proc: asyncio.subprocess.Process, text: str, timeout: float = 15) -> str:
    assert proc.stdout is not None

    async def find() -> str:
        while True:
            line = (await proc.stdout.readline()).decode()  # type: ignore[union-attr]
            if not line:
                raise AssertionError(f"the watch ended before showing {text!r}")
            if text in line:
                return line

    return await asyncio.wait_for(find(), timeout)


async def test_members_use_their_space_with_kubectl(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    info = await stack.connect_cluster("kube-1")
    agent = kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online("kube-1", timeout=30)

    await stack.ok("POST", "/api/v1/projects", json={"name": "demo", "clusters": ["kube-1"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "other", "clusters": ["kube-1"]})
    bob, carol, dave, erin = [await stack.user(u) for u in ("bob", "carol", "dave", "erin")]
    await stack.ok("PUT", "/api/v1/projects/demo/members", json={"user": "bob", "role": "user"})
    await stack.ok("PUT", "/api/v1/projects/demo/members", json={"user": "carol", "role": "viewer"})
    await stack.ok("PUT", "/api/v1/projects/other/members", json={"user": "erin", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/demo/spaces", token=bob, json={"name": "s1", "cluster": "kube-1"})
    await stack.ok("POST", "/api/v1/projects/other/spaces", token=erin, json={"name": "s2", "cluster": "kube-1"})
    await stack.wait_synced("space", "demo", "s1")
    await stack.wait_synced("space", "other", "s2")
    ns = namespace_name("space", "demo", "s1")

    kb = await member_kubectl(stack, bob, "space", "demo", "s1", tmp_path / "bob")
    config = yaml.safe_load(kb.kubeconfig.read_text())
    assert config["contexts"][0]["context"]["namespace"] == ns
    assert bob not in kb.kubeconfig.read_text(), "no token is written into the kubeconfig"
    assert config["users"][0]["user"]["exec"]["args"][0] == "token"

    # --- the owner: list, create, apply, patch, get, watch, delete -------------------------------
    code, out, err = await kb.run("get", "configmaps")
    assert code == 0 and ("No resources found" in err or "kube-root-ca.crt" in out), err
    await kb.ok("create", "configmap", "made", "--from-literal=a=1")
    await kb.ok("apply", "-f", "-", stdin=CONFIGMAP.encode())
    await kb.ok("patch", "configmap", "applied", "--type=merge", "-p", '{"data":{"colour":"green"}}')
    got = json.loads(await kb.ok("get", "configmap", "applied", "-o", "json"))
    assert got["data"] == {"colour": "green"} and got["metadata"]["namespace"] == ns
    assert admin_api.get("ConfigMap", "made", ns) is not None, "the objects are on the real cluster"
    assert "applied" in await kb.ok("describe", "configmap", "applied")

    watch = await kb.spawn("get", "configmaps", "--watch", "-o", "name")
    try:
        await line_with(watch, "configmap/made")  # the initial list
        admin_api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late", "namespace": ns}})
        await line_with(watch, "configmap/late")  # an event through the open stream
    finally:
        watch.kill()
        await watch.wait()
    await kb.ok("delete", "configmap", "made", "late")
    assert admin_api.get("ConfigMap", "made", ns) is None

    # --- refusals, each with its reason ----------------------------------------------------------
    err = await kb.refused("get", "configmaps", "-n", "default")
    assert "Forbidden" in err and "only its namespace" in err
    err = await kb.refused("get", "namespaces")
    assert "Forbidden" in err and "outside it" in err
    err = await kb.refused("get", "configmaps", "--as=admin")
    assert "impersonation is not allowed" in err
    err = await kb.refused("get", "configmaps", "--as=bob", "--as-group=system:masters")
    assert "impersonation is not allowed" in err
    err = await kb.refused("get", "pods", "-n", namespace_name("space", "other", "s2"))
    assert "Forbidden" in err

    kc = await member_kubectl(stack, carol, "space", "demo", "s1", tmp_path / "carol")
    assert "applied" in await kc.ok("get", "configmaps")
    err = await kc.refused("create", "configmap", "nope", "--from-literal=a=1")
    assert "forbidden" in err and "tether:user:carol" in err, "a viewer may look but not write"

    kd = await member_kubectl(stack, bob, "space", "demo", "s1", tmp_path / "dave")
    kd.env["TETHER_TOKEN"] = dave  # a kubeconfig passed on to someone who is no member
    err = await kd.refused("get", "configmaps")
    assert "Forbidden" in err  # kubectl's discovery does not print the reason (the HTTP test checks it)
    ke = await member_kubectl(stack, bob, "space", "demo", "s1", tmp_path / "erin")
    ke.env["TETHER_TOKEN"] = erin  # a member of another project
    err = await ke.refused("get", "configmaps")
    assert "Forbidden" in err
    kx = await member_kubectl(stack, bob, "space", "demo", "s1", tmp_path / "nobody")
    kx.env["TETHER_TOKEN"] = "tat_" + "0" * 48
    err = await kx.refused("get", "configmaps")
    assert "Unauthorized" in err or "must be logged in" in err

    # --- audit: the mutating calls are on the trail -----------------------------------------------
    trail = await stack.ok("GET", "/api/v1/audit", params={"user": "bob"})
    actions = [e["action"] for e in trail["items"]]
    assert f"POST /api/v1/namespaces/{ns}/configmaps" in actions
    assert f"DELETE /api/v1/namespaces/{ns}/configmaps/made" in actions

    # --- the cluster goes away: an immediate, clear error ----------------------------------------
    agent.stop()
    await stack.wait_online("kube-1", online=False, timeout=30)
    started = asyncio.get_running_loop().time()
    err = await kb.refused("get", "configmaps", "--request-timeout=20s")
    assert "offline since" in err and "kube-1" in err
    assert asyncio.get_running_loop().time() - started < 10


async def test_a_watch_ends_cleanly_when_the_agent_reconnects(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    info = await stack.connect_cluster("kube-2")
    agent = kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online("kube-2", timeout=30)
    await wait_gateway_served(stack, "kube-2")
    await stack.ok("POST", "/api/v1/projects", json={"name": "rc", "clusters": ["kube-2"]})
    bob = await stack.user("bob")
    await stack.ok("PUT", "/api/v1/projects/rc/members", json={"user": "bob", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/rc/spaces", token=bob, json={"name": "s1", "cluster": "kube-2"})
    await stack.wait_synced("space", "rc", "s1")
    kb = await member_kubectl(stack, bob, "space", "rc", "s1", tmp_path / "bob")
    await kb.ok("create", "configmap", "first", "--from-literal=a=1")

    watch = await kb.spawn("get", "configmaps", "--watch", "-o", "name")
    try:
        await line_with(watch, "configmap/first")
        agent.stop()  # the agent goes: the watch must end, not hang
        code = await asyncio.wait_for(watch.wait(), 60)
        assert code is not None
    finally:
        if watch.returncode is None:
            watch.kill()
            await watch.wait()
    kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"], name="agent-kube-again")
    await stack.wait_online("kube-2", timeout=30)
    await wait_gateway_served(stack, "kube-2")  # online (heartbeats) comes before the gateway is served

    async def listed() -> bool:
        code, out, _ = await kb.run("get", "configmaps", "-o", "name")
        return code == 0 and "configmap/first" in out

    await wait_for(listed, timeout=30, what="kubectl to work again after the agent came back")


async def test_logs_and_a_slow_reader(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    from tests.gateway.conftest import HttpsStack
    from tests.kube.workers import LOG_LINES

    assert isinstance(stack, HttpsStack)
    info = await stack.connect_cluster("kube-3")
    kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online("kube-3", timeout=30)
    await stack.ok("POST", "/api/v1/projects", json={"name": "lg", "clusters": ["kube-3"]})
    bob = await stack.user("bob")
    await stack.ok("PUT", "/api/v1/projects/lg/members", json={"user": "bob", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/lg/spaces", token=bob, json={"name": "s1", "cluster": "kube-3"})
    await stack.wait_synced("space", "lg", "s1")
    ns = namespace_name("space", "lg", "s1")
    kb = await member_kubectl(stack, bob, "space", "lg", "s1", tmp_path / "bob")

    # A pod run by the member (kwok's fake kubelet runs it), and its logs through the gateway.
    await kb.ok("run", "web", "--image=registry.local/web:1", "--restart=Never")

    async def running() -> bool:
        return "Running" in await kb.ok("get", "pod", "web", "-o", "jsonpath={.status.phase}")

    await wait_for(running, timeout=60, what="the member's pod Running")
    assert (await kb.ok("logs", "web")).splitlines() == list(LOG_LINES)
    follow = await kb.spawn("logs", "-f", "web")  # stays open, as -f does: the lines arrive through the stream
    try:
        for text in LOG_LINES:
            await line_with(follow, text)
        assert follow.returncode is None
    finally:
        follow.kill()
        await follow.wait()

    # A reader that stops reading holds back only its own stream: 3 MiB of ConfigMaps listed and left unread
    # (more than the agent may send without credits), while other requests go on at once.
    for i in range(48):
        admin_api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"big-{i}", "namespace": ns},
                "data": {"blob": "x" * 64 * 1024},
            }
        )
    async with stack.http(bob) as http:
        path = f"/kubernetes/project/lg/space/s1/api/v1/namespaces/{ns}/configmaps"
        async with http.stream("GET", path) as slow:
            assert slow.status_code == 200
            first = await anext(slow.aiter_raw())
            assert first
            loop = asyncio.get_running_loop()
            for _ in range(3):
                began = loop.time()
                await kb.ok("get", "pod", "web")
                assert loop.time() - began < 5, "a stalled stream held back another request"
        # The slow reader finally reads: everything arrives, intact.
        async with http.stream("GET", path) as slow:
            body = await slow.aread()
    assert len(json.loads(body)["items"]) >= 48
