"""Small helpers of the kube tests: commands, object reads, access reviews."""

from __future__ import annotations

import asyncio
import base64
import itertools
from typing import Any

import yaml

from agent.drivers.kube import KubeApi
from agent.gateway_tenant import TENANT_HOSTS_ENV
from schemas.messages import Command, DesiredState, Member, Quota, Resources, WorkloadKind, WorkloadSpec

GiB = 2**30
_ops = itertools.count(1)


def command(
    kind: WorkloadKind,
    project: str,
    name: str,
    generation: int,
    state: DesiredState = "running",
    *,
    version: str = "",
    members: tuple[Member, ...] = (),
    cpu: float = 1.0,
    memory: int = 2 * GiB,
    quota: Quota | None = None,
    cluster: str = "c1",
    operation: str = "apply",
) -> Command:
    return Command(
        op_id=f"op-{next(_ops)}",
        generation=generation,
        issued_at=1.0,
        operation=operation,
        spec=WorkloadSpec(
            kind=kind,
            project=project,
            name=name,
            cluster=cluster,
            state=state,
            version=version if kind == "tenant" else "",
            members=members,
            resources=Resources(cpu=cpu, memory=memory),
            quota=quota or Quota(tenants=5, spaces=5, cpu=8, memory=16 * GiB),
        ),
    )


def member(subject: str, access: str) -> Member:
    return Member(subject=subject, access=access)  # type: ignore[arg-type]


def names(api: KubeApi, kind: str, namespace: str) -> set[str]:
    return {o["metadata"]["name"] for o in api.list(kind, namespace)}


def get(api: KubeApi, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
    obj = api.get(kind, name, namespace)
    assert obj is not None, f"{kind} {namespace}/{name} does not exist"
    return obj


def can(
    api: KubeApi,
    *,
    user: str = "",
    groups: tuple[str, ...] = (),
    verb: str,
    resource: str,
    group: str = "",
    namespace: str = "",
    name: str = "",
    subresource: str = "",
) -> bool:
    """A SubjectAccessReview: may this identity do this?"""
    attrs: dict[str, Any] = {"verb": verb, "resource": resource, "group": group}
    if namespace:
        attrs["namespace"] = namespace
    if name:
        attrs["name"] = name
    if subresource:
        attrs["subresource"] = subresource
    review = api.create(
        {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "metadata": {"name": ""},
            "spec": {"user": user, "groups": list(groups), "resourceAttributes": attrs},
        }
    )
    return bool(review["status"].get("allowed"))


async def wait_gone(api: KubeApi, namespace: str, timeout: float = 60.0) -> None:
    """Wait until the namespace controller has removed ``namespace`` (everything in it first)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while api.get("Namespace", namespace) is not None:
        assert loop.time() < deadline, f"namespace {namespace} still exists after {timeout:g}s"
        await asyncio.sleep(0.1)


def finalize_namespace(api: KubeApi, name: str) -> None:
    """What the namespace controller would do last: drop the ``kubernetes`` finalizer (it then disappears)."""
    ns = api.get("Namespace", name)
    if ns is None:
        return
    ns["spec"]["finalizers"] = []
    api.request("PUT", f"/api/v1/namespaces/{name}/finalize", body=ns, what=f"finalizing namespace {name}")


TENANT_HOSTS = {TENANT_HOSTS_ENV: "127.0.0.1"}
"""The stand-in tenant API server listens on loopback, not on the tenant's own Service: the agent must be told
it may call it (``agent.gateway_tenant.parse_kubeconfig`` refuses any other host)."""


def tenant_kubeconfig(server: Any) -> dict[str, Any]:
    """A kubeconfig of the stand-in tenant API server (``tests.kube.cluster.ControlPlane``), CA inline, as vCluster
    writes it into Secret ``vc-vcluster``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tether",
                "cluster": {
                    "server": server.url,
                    "certificate-authority-data": base64.b64encode(server.ca_file.read_bytes()).decode(),
                },
            }
        ],
        "users": [{"name": "tether", "user": {"token": server.admin_token}}],
        "contexts": [{"name": "tether", "context": {"cluster": "tether", "user": "tether"}}],
        "current-context": "tether",
    }


def write_tenant_kubeconfig(api: KubeApi, namespace: str, server: Any) -> None:
    """Play vCluster's part: its kubeconfig Secret in the tenant's namespace."""
    config = yaml.safe_dump(tenant_kubeconfig(server)).encode()
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "vc-vcluster", "namespace": namespace},
            "data": {"config": base64.b64encode(config).decode()},
        },
        field_manager="vcluster",
    )
