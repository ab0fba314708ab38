"""End to end: the platform, a real agent process with the kube driver, a real kube-apiserver.

The cluster is connected the way an operator would: the manifests from
``POST /api/v1/clusters`` are applied to the cluster, and the agent runs as their
ServiceAccount (as a process here, as a pod there).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import namespace_name
from services.api import manifests
from tests.harness import Proc, Stack, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import finalize_namespace, get, names

pytestmark = pytest.mark.kube


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    s = Stack(tmp=tmp_path, env_overrides={"TETHER_INVENTORY_INTERVAL": "1"})
    try:
        await s.start()
        yield s
    finally:
        s.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(s.logs())


def install(control_plane: ControlPlane, api: KubeApi, rendered: str, path: Path) -> Path:
    """Apply the manifests; a kubeconfig of the agent's ServiceAccount (what the pod would use)."""
    for obj in yaml.safe_load_all(rendered):
        api.apply(obj, field_manager="kubectl")
    token = api.request(
        "POST",
        f"/api/v1/namespaces/{manifests.NAMESPACE}/serviceaccounts/{manifests.NAME}/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}},
    )["status"]["token"]
    return control_plane.write_token_kubeconfig(path, manifests.AGENT_USER, token)


def kube_agent(stack: Stack, kubeconfig: Path, state_dir: Path, token: str) -> Proc:
    argv = [sys.executable, "-m", "agent", "run", "--server", stack.nats_url, "--driver", "kube"]
    argv += ["--kubeconfig", str(kubeconfig), "--state-dir", str(state_dir), "--token", token]
    proc = Proc(name="agent-kube", argv=argv, env=stack.env(), log=stack.tmp / "logs" / "agent-kube.log").start()
    stack.agents.append(proc)
    return proc


async def test_a_real_cluster_connected_with_its_manifests(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tmp_path: Path
) -> None:
    api = admin_api
    info = await stack.connect_cluster("kube-1")
    rendered: str = info["manifests"]
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered)}
    assert objs[("Secret", "tether-agent-token")]["stringData"]["token"] == info["token"]
    assert stack.nats_url in objs[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]["args"]

    kubeconfig = install(control_plane, api, rendered, tmp_path / "agent-kubeconfig")
    kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"])
    cluster = await stack.wait_online("kube-1", timeout=30)
    assert cluster["kubernetes_version"] == "v1.36.5"

    await stack.ok("POST", "/api/v1/projects", json={"name": "e2e"})
    bob = await stack.user("bob")
    await stack.ok("PUT", "/api/v1/projects/e2e/members", json={"user": "bob", "role": "user"})
    await stack.ok(
        "POST", "/api/v1/projects/e2e/tenants", token=bob, json={"name": "t1", "cluster": "kube-1", "version": "v1.35"}
    )
    await stack.ok("POST", "/api/v1/projects/e2e/spaces", token=bob, json={"name": "s1", "cluster": "kube-1"})
    await stack.wait_synced("tenant", "e2e", "t1")
    await stack.wait_synced("space", "e2e", "s1")
    tns, sns = namespace_name("tenant", "e2e", "t1"), namespace_name("space", "e2e", "s1")
    assert get(api, "StatefulSet", "control-plane", tns)["spec"]["replicas"] == 1
    assert names(api, "RoleBinding", tns) == {"tether-control-plane"}, "tenant members get nothing on the host"
    assert "tether-user-bob-admin" in names(api, "RoleBinding", sns), "the space's owner administers it"

    # sleep, then drift: a binding deleted by hand comes back with the next inventory's resync
    await stack.ok("POST", "/api/v1/projects/e2e/tenants/t1/sleep", token=bob)

    async def asleep() -> Any:
        w = await stack.workload("tenant", "e2e", "t1")
        return w and w["phase"] == "Sleeping" and get(api, "StatefulSet", "control-plane", tns)["spec"]["replicas"] == 0

    await wait_for(asleep, timeout=30, what="tenant asleep with its control plane scaled to zero")
    api.delete("RoleBinding", "tether-user-bob-admin", sns)
    await wait_for(lambda: "tether-user-bob-admin" in names(api, "RoleBinding", sns), timeout=30, what="drift put back")

    # delete: the namespace goes (the test plays the namespace controller's part)
    await stack.ok("DELETE", "/api/v1/projects/e2e/tenants/t1", token=bob)
    await wait_for(
        lambda: get(api, "Namespace", tns)["metadata"].get("deletionTimestamp") or None,
        timeout=30,
        what="the tenant's namespace being deleted",
    )
    finalize_namespace(api, tns)
    await stack.wait_gone("tenant", "e2e", "t1")


async def test_cli_prints_the_manifests(stack: Stack, tmp_path: Path) -> None:
    env = {**stack.env(), "TETHER_SERVER": stack.api, "TETHER_TOKEN": stack.admin_token}
    env["TETHER_CONFIG"] = str(tmp_path / "cli.json")
    argv = [str(Path(sys.executable).parent / "tether"), "cluster", "connect", "edge-9", "--manifests"]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(out.decode())}
    assert objs[("Secret", "tether-agent-token")]["stringData"]["token"].startswith("tct.edge-9.")
    assert objs[("Namespace", "tether-agent")]["metadata"]["labels"]["tether.dev/cluster"] == "edge-9"


async def test_tether_up_connects_the_kubeconfig_cluster_as_local(kubeconfig: Path, tmp_path: Path) -> None:
    from tests.integration.test_up import Up, our_processes

    up = Up(tmp_path)
    up.env["KUBECONFIG"] = str(kubeconfig)
    try:
        proc = up.start()
        await up.wait_ready()
        assert "driver kube" in proc.output()
        local = await wait_for(
            lambda: (c := up.clusters().get("local", {})) and c.get("online") and c, timeout=30, what="local online"
        )
        assert local["kubernetes_version"] == "v1.36.5"
        assert local["local"] is True
    finally:
        if up.proc:
            up.proc.stop(timeout=20)
        for pid in our_processes(str(up.data)) + our_processes(f":{up.nats_port}"):
            os.kill(pid, signal.SIGKILL)
