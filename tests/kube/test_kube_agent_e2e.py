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
from tests.harness import Stack, kube_agent, running, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import TENANT_HOSTS, get, names, write_tenant_kubeconfig

pytestmark = pytest.mark.kube


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with running(Stack(tmp=tmp_path, env_overrides={"TETHER_INVENTORY_INTERVAL": "1"}), request) as s:
        yield s


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


async def test_a_real_cluster_connected_with_its_manifests(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tenant_api_server: ControlPlane, tmp_path: Path
) -> None:
    api = admin_api
    info = await stack.connect_cluster("kube-1")
    rendered: str = info["manifests"]
    objs = {(o["kind"], o["metadata"]["name"]): o for o in yaml.safe_load_all(rendered)}
    assert objs[("Secret", "tether-agent-token")]["stringData"]["token"] == info["token"]
    assert stack.nats_url in objs[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]["args"]

    kubeconfig = install(control_plane, api, rendered, tmp_path / "agent-kubeconfig")
    kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"], env=TENANT_HOSTS)
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
    assert get(api, "StatefulSet", "vcluster", tns)["spec"]["replicas"] == 1
    assert names(api, "RoleBinding", tns) == {"vc-vcluster"}, "tenant members get nothing on the host"
    assert "tether-user-bob-admin" in names(api, "RoleBinding", sns), "the space's owner administers it"

    # applied, and its pod Ready under kwok, but not Ready until the tenant's own API answers (and says why)
    async def waiting_for_its_api() -> Any:
        w = await stack.workload("tenant", "e2e", "t1")
        ready = next((c for c in (w or {}).get("conditions", []) if c["type"] == "Ready"), {})
        return w and w["phase"] == "Pending" and ready.get("reason") == "KubeconfigMissing" and w

    await wait_for(waiting_for_its_api, timeout=60, what="tenant Pending, its pod Ready, its API not answering yet")
    write_tenant_kubeconfig(api, tns, tenant_api_server)
    await wait_for(lambda: phase_is(stack, "t1", "Ready"), timeout=60, what="tenant Ready")
    w = await stack.workload("tenant", "e2e", "t1")
    assert w is not None and w["observed"]["version"] == "v1.35.0", "the version the tenant runs"

    async def healthy() -> Any:
        # By project and name: the session's cluster may hold other tests' tenants called t1 too.
        planes = {(c["project"], c["name"]): c for c in (await stack.cluster("kube-1"))["control_planes"]}
        plane = planes.get(("e2e", "t1")) or {}
        return plane.get("ready") and plane.get("version") == "v1.35.0" and plane.get("pods") == 1

    await wait_for(healthy, timeout=30, what="the tenant's readiness, version and pods in the cluster's health")

    # sleep: zero pods in its namespace
    await stack.ok("POST", "/api/v1/projects/e2e/tenants/t1/sleep", token=bob)

    async def asleep() -> Any:
        return await phase_is(stack, "t1", "Sleeping") and not api.list("Pod", tns)

    await wait_for(asleep, timeout=30, what="tenant asleep with no pod left")
    # drift: a binding deleted by hand comes back with the next inventory's resync; a scaled StatefulSet too
    api.delete("RoleBinding", "tether-user-bob-admin", sns)
    api.patch_merge("StatefulSet", "vcluster", {"spec": {"replicas": 2}}, tns)
    await wait_for(lambda: "tether-user-bob-admin" in names(api, "RoleBinding", sns), timeout=30, what="drift put back")
    await wait_for(
        lambda: get(api, "StatefulSet", "vcluster", tns)["spec"]["replicas"] == 0, timeout=30, what="scale put back"
    )
    await wait_for(lambda: not api.list("Pod", tns), timeout=30, what="no pod left again")

    # wake, then upgrade: a new pod with the new version, the data's claim kept
    claim = get(api, "PersistentVolumeClaim", "data-vcluster-0", tns)["metadata"]["uid"]
    await stack.ok("POST", "/api/v1/projects/e2e/tenants/t1/wake", token=bob)
    await wait_for(lambda: phase_is(stack, "t1", "Ready"), timeout=60, what="tenant awake and Ready")
    await stack.ok("POST", "/api/v1/projects/e2e/tenants/t1/upgrade", token=bob, json={"version": "v1.36"})

    async def upgraded() -> Any:
        w = await stack.workload("tenant", "e2e", "t1")
        return w and w["phase"] == "Ready" and w["observed"]["version"] == "v1.36.0"

    await wait_for(upgraded, timeout=60, what="tenant upgraded and Ready")
    assert get(api, "PersistentVolumeClaim", "data-vcluster-0", tns)["metadata"]["uid"] == claim

    # delete: Deleting until the namespace is gone, then gone
    await stack.ok("DELETE", "/api/v1/projects/e2e/tenants/t1", token=bob)
    await stack.wait_gone("tenant", "e2e", "t1", timeout=60)
    assert api.get("Namespace", tns) is None, "the record went only once the namespace was gone"


async def phase_is(stack: Stack, name: str, phase: str) -> bool:
    w = await stack.workload("tenant", "e2e", name)
    return bool(w and w["phase"] == phase)


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
    from tests.upstack import Up, our_processes

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
