"""Tenant clusters as vClusters on the test cluster whose pods run (kwok): the kube driver's whole lifecycle,
seen in pod, PVC and namespace state.

Under kwok the vCluster container never really runs (kwok marks its pod Ready), so its API is played by a
second real API server: the test writes that server's kubeconfig into the tenant's Secret ``vc-vcluster``,
where vCluster writes its own, and the driver reaches it the way it reaches a real tenant.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from agent.drivers import WorkloadStatus
from agent.drivers.kube import KubeApi, KubeDriver
from agent.drivers.kube_objects import TenantSettings, namespace_name
from agent.drivers.vcluster import VClusterSettings
from agent.settings import AgentSettings
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import GiB, command, get, member, wait_gone, write_tenant_kubeconfig

pytestmark = pytest.mark.kube


async def until(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert loop.time() < deadline, f"not within {timeout:g}s: {what}"
        await asyncio.sleep(0.2)


def pods(api: KubeApi, ns: str) -> list[dict[str, Any]]:
    return api.list("Pod", ns)


def ready(pod: dict[str, Any]) -> bool:
    conds = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
    return conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp")


def control_plane_pod(api: KubeApi, ns: str) -> dict[str, Any] | None:
    pod = api.get("Pod", "vcluster-0", ns)
    return pod if pod is not None and ready(pod) else None


async def status_of(driver: KubeDriver, project: str, name: str) -> WorkloadStatus | None:
    for status in await driver.statuses():
        if (status.project, status.name) == (project, name):
            return status
    return None


def synced_pod(ns: str, name: str) -> dict[str, Any]:
    """A pod as vCluster's syncer writes it into the host namespace (its syncer does not run under kwok)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"vcluster.loft.sh/managed-by": "vcluster"}},
        "spec": {"containers": [{"name": "app", "image": "example.invalid/app:1"}]},
    }


async def test_a_tenant_comes_up_sleeps_wakes_upgrades_and_goes(
    driver: KubeDriver, admin_api: KubeApi, tenant_api_server: ControlPlane
) -> None:
    api = admin_api
    ns = namespace_name("tenant", "eng", "t1")
    alice = member("user:alice", "admin")

    # create: applied, but not ready until its control plane's pod is Ready and its API answers
    out = await driver.apply(
        command("tenant", "eng", "t1", 1, version="v1.35", members=(alice,), cpu=4, memory=8 * GiB)
    )
    assert out.applied and not out.settled
    pod = await until(lambda: control_plane_pod(api, ns), "the control plane's pod scheduled and Ready")
    assert pod["spec"]["nodeName"].startswith("kwok-node-")
    claim = get(api, "PersistentVolumeClaim", "data-vcluster-0", ns)
    status = await status_of(driver, "eng", "t1")
    assert status is not None and not status.settled and status.reason == "KubeconfigMissing"
    write_tenant_kubeconfig(api, ns, tenant_api_server)
    status = await until(lambda: _settled(driver, "eng", "t1"), "the tenant ready")
    assert (status.version, status.generation, status.state) == ("v1.35.0", 1, "running")
    # members' access is applied inside the tenant, through its API
    inside = KubeApi.from_kubeconfig(tenant_api_server.kubeconfig())
    try:
        binding = get(inside, "ClusterRoleBinding", "tether-user-alice-admin")
        assert binding["roleRef"]["name"] == "cluster-admin"
        assert binding["subjects"][0]["name"] == "tether:user:alice"
    finally:
        inside.close()
    health = await driver.health()
    plane = next(c for c in health.control_planes if (c.project, c.name) == ("eng", "t1"))
    assert (plane.ready, plane.version, plane.pods) == (True, "v1.35.0", 1)

    # sleep: the control plane and what vCluster synced into the namespace stop; zero pods
    for name in ("app-x-default-x-vcluster", "db-x-default-x-vcluster"):
        api.apply(synced_pod(ns, name), field_manager="vcluster")
    await until(lambda: len([p for p in pods(api, ns) if ready(p)]) == 3, "the synced workloads running")
    out = await driver.apply(
        command("tenant", "eng", "t1", 2, "sleeping", version="v1.35", members=(alice,), cpu=4, memory=8 * GiB)
    )
    assert (out.applied, out.state) == (True, "sleeping")
    await until(lambda: not pods(api, ns), "zero pods in the tenant's namespace")
    assert '"count": 2' in get(api, "Namespace", ns)["metadata"]["annotations"]["tether.dev/restore"]
    asleep = await until(lambda: _settled(driver, "eng", "t1"), "asleep")
    assert asleep.state == "sleeping"

    # wake: the control plane comes back (its syncer would recreate the workloads from the tenant's state)
    await driver.apply(command("tenant", "eng", "t1", 3, version="v1.35", members=(alice,), cpu=4, memory=8 * GiB))
    await until(lambda: control_plane_pod(api, ns), "the control plane back")
    assert "tether.dev/restore" not in get(api, "Namespace", ns)["metadata"]["annotations"]
    await until(lambda: _settled(driver, "eng", "t1"), "awake and ready")

    # upgrade: a new pod with the new version's images, the same claim (the same data)
    old_uid = control_plane_pod(api, ns)["metadata"]["uid"]  # type: ignore[index]
    await driver.apply(command("tenant", "eng", "t1", 4, version="v1.36", members=(alice,), cpu=4, memory=8 * GiB))

    def upgraded() -> dict[str, Any] | None:
        pod = control_plane_pod(api, ns)
        return pod if pod and pod["metadata"]["uid"] != old_uid else None

    pod = await until(upgraded, "a new control plane pod")
    assert pod["spec"]["initContainers"][0]["image"] == "ghcr.io/loft-sh/kubernetes:v1.36.0"
    assert get(api, "PersistentVolumeClaim", "data-vcluster-0", ns)["metadata"]["uid"] == claim["metadata"]["uid"]
    status = await until(lambda: _settled(driver, "eng", "t1"), "upgraded and ready")
    assert status.version == "v1.36.0"

    # delete: Deleting until the namespace is gone
    out = await driver.apply(command("tenant", "eng", "t1", 5, "deleted"))
    assert out.state == "deleted"
    if not out.settled:
        assert out.reason == "Terminating"
    await wait_gone(api, ns)
    assert await status_of(driver, "eng", "t1") is None


async def _settled(driver: KubeDriver, project: str, name: str) -> WorkloadStatus | None:
    status = await status_of(driver, project, name)
    return status if status is not None and status.settled else None


@pytest.fixture
async def no_storage_driver(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[KubeDriver]:
    """A driver whose tenants ask for a StorageClass that does not exist: their pods can never be scheduled."""
    d = KubeDriver(
        AgentSettings(driver="kube", kubeconfig=kubeconfig, state_dir=tmp_path / "agent"),
        tenants=TenantSettings(vcluster=VClusterSettings(storage_class="does-not-exist")),
        environ={},
    )
    yield d
    await d.close()


async def test_a_pod_that_never_becomes_ready_is_reported_with_its_reason(
    no_storage_driver: KubeDriver, admin_api: KubeApi
) -> None:
    driver = no_storage_driver
    out = await driver.apply(command("tenant", "eng", "stuck", 1, version="v1.36"))
    assert out.applied and not out.settled

    async def unschedulable() -> WorkloadStatus | None:
        status = await status_of(driver, "eng", "stuck")
        return status if status is not None and status.reason == "Unschedulable" else None

    status = await until(unschedulable, "the scheduler's reason reported")
    assert not status.settled and "PersistentVolumeClaim" in status.message
    plane = next(c for c in (await driver.health()).control_planes if c.name == "stuck")
    assert (plane.ready, plane.reason) == (False, "Unschedulable")
    await driver.apply(command("tenant", "eng", "stuck", 2, "deleted"))
    await wait_gone(admin_api, namespace_name("tenant", "eng", "stuck"))
