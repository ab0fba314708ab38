"""The tenant-cluster gateway tests' rig: a platform on HTTPS that lets the agent reach the stand-in tenant API
server on 127.0.0.1 (a real tenant's API is its own Service, ``vcluster.<namespace>.svc``), and a tenant made
Ready on it (its kubeconfig written into Secret ``vc-vcluster``, where vCluster writes its own)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import namespace_name
from agent.gateway_tenant import TENANT_HOSTS_ENV
from tests.gateway.conftest import HttpsStack, Kubectl, kube_agent, member_kubectl
from tests.harness import Stack, running, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import write_tenant_kubeconfig

RIG_ENV = {"TETHER_INVENTORY_INTERVAL": "1", TENANT_HOSTS_ENV: "127.0.0.1"}


async def https_stack(tmp_path: Path, request: pytest.FixtureRequest, **env: str) -> AsyncIterator[Stack]:
    async with running(HttpsStack(tmp=tmp_path, env_overrides={**RIG_ENV, **env}), request) as s:
        yield s


async def phase_is(stack: Stack, project: str, name: str, phase: str) -> bool:
    w = await stack.workload("tenant", project, name)
    return bool(w and w["phase"] == phase)


async def ready_tenant(
    stack: Stack,
    host: KubeApi,
    tenant_api: ControlPlane,
    project: str,
    name: str,
    cluster: str,
    owner: str,
    **spec: object,
) -> str:
    """Create a tenant as ``owner`` (a token; ``spec``: more fields of the create), play vCluster's part, wait
    until Ready; its host namespace."""
    body = {"name": name, "cluster": cluster, "version": "v1.35", **spec}
    await stack.ok("POST", f"/api/v1/projects/{project}/tenants", token=owner, json=body)
    ns = namespace_name("tenant", project, name)
    await wait_for(lambda: host.get("Namespace", ns) is not None, timeout=30, what="the tenant's namespace")
    write_tenant_kubeconfig(host, ns, tenant_api)
    await wait_for(lambda: phase_is(stack, project, name, "Ready"), timeout=60, what=f"tenant {name} Ready")
    return ns


async def member_tenant(
    stack: Stack,
    host: KubeApi,
    control_plane: ControlPlane,
    tenant_api: ControlPlane,
    tmp: Path,
    cluster: str,
    project: str,
    **spec: object,
) -> tuple[Kubectl, str, str]:
    """Cluster ``cluster`` with a kube agent, project ``project`` with bob as a user, tenant ``t1`` Ready as bob's
    (``spec``: more fields of its create): (kubectl as bob, bob's token, the tenant's host namespace)."""
    info = await stack.connect_cluster(cluster)
    kube_agent(stack, control_plane.kubeconfig(), tmp / "agent-state", info["token"])
    await stack.wait_online(cluster, timeout=30)
    await stack.ok("POST", "/api/v1/projects", json={"name": project, "clusters": [cluster]})
    bob = await stack.user("bob")
    await stack.ok("PUT", f"/api/v1/projects/{project}/members", json={"user": "bob", "role": "user"})
    ns = await ready_tenant(stack, host, tenant_api, project, "t1", cluster, bob, **spec)
    return await member_kubectl(stack, bob, "tenant", project, "t1", tmp / "bob"), bob, ns
