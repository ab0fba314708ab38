"""kubectl through the platform into a tenant cluster: real kubectl, platform, agent (kube driver, running as the
ServiceAccount of its own manifests), the host's kube-apiserver and a second real kube-apiserver playing the
tenant's control plane (its kubeconfig in Secret ``vc-vcluster``, where vCluster writes its own).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import namespace_name
from services.api import manifests
from tests.gateway.conftest import kube_agent, member_kubectl
from tests.gateway.tenant_rig import https_stack, ready_tenant
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import can, names
from tests.kube.test_kube_agent_e2e import install

pytestmark = pytest.mark.kube

AGENT_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tether-agent", "system:authenticated")


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async for s in https_stack(tmp_path, request):
        yield s


def agent_may(api: KubeApi, verb: str, resource: str, namespace: str = "", name: str = "") -> bool:
    return can(
        api,
        user=manifests.AGENT_USER,
        groups=AGENT_GROUPS,
        verb=verb,
        resource=resource,
        namespace=namespace,
        name=name,
    )


async def test_members_use_their_tenant_cluster_and_never_the_host(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tenant_api_server: ControlPlane, tmp_path: Path
) -> None:
    info = await stack.connect_cluster("kube-t")
    agent_kubeconfig = install(control_plane, admin_api, info["manifests"], tmp_path / "agent-kubeconfig")
    kube_agent(stack, agent_kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online("kube-t", timeout=30)

    await stack.ok("POST", "/api/v1/projects", json={"name": "tp", "clusters": ["kube-t"]})
    await stack.ok("POST", "/api/v1/projects", json={"name": "tq", "clusters": ["kube-t"]})
    bob, carol, erin = [await stack.user(u) for u in ("bob", "carol", "erin")]
    await stack.ok("PUT", "/api/v1/projects/tp/members", json={"user": "bob", "role": "user"})
    await stack.ok("PUT", "/api/v1/projects/tp/members", json={"user": "carol", "role": "viewer"})
    await stack.ok("PUT", "/api/v1/projects/tq/members", json={"user": "erin", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/tp/spaces", token=bob, json={"name": "s1", "cluster": "kube-t"})
    tns = await ready_tenant(stack, admin_api, tenant_api_server, "tp", "t1", "kube-t", bob)
    sns = namespace_name("space", "tp", "s1")
    inside = KubeApi.from_kubeconfig(tenant_api_server.kubeconfig())
    try:
        await _member_admin_inside(stack, admin_api, inside, bob, tns, sns, tmp_path)
        await _viewer_and_strangers(stack, bob, carol, erin, tmp_path)
        # The agent reads that one Secret of the tenant's namespace, and no other Secret anywhere.
        assert agent_may(admin_api, "get", "secrets", tns, "vc-vcluster")
        assert not agent_may(admin_api, "get", "secrets", tns, "other")
        assert not agent_may(admin_api, "list", "secrets", tns)
        assert not agent_may(admin_api, "watch", "secrets", tns)
        assert not agent_may(admin_api, "get", "secrets", "kube-system", "bootstrap-token-abcdef")
        await _removed_member_loses_access(stack, admin_api, inside, carol, sns, tmp_path)
    finally:
        inside.close()


async def _member_admin_inside(
    stack: Stack, host: KubeApi, inside: KubeApi, bob: str, tns: str, sns: str, tmp_path: Path
) -> None:
    kb = await member_kubectl(stack, bob, "tenant", "tp", "t1", tmp_path / "bob")
    assert "/kubernetes/project/tp/tenant/t1" in kb.kubeconfig.read_text()
    # bob administers the tenant: everything inside it, as tether:user:bob
    assert (await kb.ok("auth", "can-i", "*", "*", "--all-namespaces")).strip() == "yes"
    await kb.ok("create", "namespace", "bobs-work")
    await kb.ok("create", "configmap", "made", "-n", "bobs-work", "--from-literal=a=1")
    await kb.ok("patch", "configmap", "made", "-n", "bobs-work", "--type=merge", "-p", '{"data":{"a":"2"}}')
    made = inside.get("ConfigMap", "made", "bobs-work")
    assert made is not None and made["data"] == {"a": "2"}, "the object is in the tenant's own API server"
    assert host.get("Namespace", "bobs-work") is None, "and not on the host"
    who = json.loads(await kb.ok("auth", "whoami", "-o", "json"))
    assert who["status"]["userInfo"]["username"] == "tether:user:bob"
    # the tenant's namespaces, never the host's
    listed = await kb.ok("get", "namespaces", "-o", "name")
    assert "namespace/bobs-work" in listed
    assert tns not in listed and sns not in listed
    await kb.ok("delete", "namespace", "bobs-work", "--wait=false")
    # on the host, the tenant's admin is nobody
    for verb, resource, namespace in [
        ("list", "namespaces", ""),
        ("get", "secrets", tns),
        ("list", "pods", "kube-system"),
        ("get", "configmaps", tns),
    ]:
        assert not can(host, user="tether:user:bob", verb=verb, resource=resource, namespace=namespace)
    err = await kb.refused("get", "pods", "--as=admin")
    assert "impersonation is not allowed" in err
    err = await kb.refused("get", "pods", "--as=tether:user:bob", "--as-group=system:masters")
    assert "impersonation is not allowed" in err
    trail = await stack.ok("GET", "/api/v1/audit", params={"user": "bob"})
    assert "POST /api/v1/namespaces/bobs-work/configmaps" in [e["action"] for e in trail["items"]]


async def _viewer_and_strangers(stack: Stack, bob: str, carol: str, erin: str, tmp_path: Path) -> None:
    kc = await member_kubectl(stack, carol, "tenant", "tp", "t1", tmp_path / "carol")
    await kc.ok("get", "namespaces")
    err = await kc.refused("create", "namespace", "carols")
    assert "forbidden" in err and "tether:user:carol" in err, "a viewer may look but not write"
    ke = await member_kubectl(stack, bob, "tenant", "tp", "t1", tmp_path / "erin")
    ke.env["TETHER_TOKEN"] = erin  # a member of another project with bob's kubeconfig
    assert "Forbidden" in await ke.refused("get", "namespaces")
    async with stack.http(erin) as http:  # type: ignore[attr-defined]
        resp = await http.get("/kubernetes/project/tp/tenant/t1/api/v1/namespaces")
    assert resp.status_code == 403 and resp.json()["reason"] == "Forbidden"


def bindings(api: KubeApi) -> set[str]:
    return {o["metadata"]["name"] for o in api.list("ClusterRoleBinding")}


async def _removed_member_loses_access(
    stack: Stack, host: KubeApi, inside: KubeApi, carol: str, sns: str, tmp_path: Path
) -> None:
    assert "tether-user-carol-view" in bindings(inside)
    assert any("carol" in n for n in names(host, "RoleBinding", sns))
    await stack.ok("DELETE", "/api/v1/projects/tp/members/user/carol")
    await wait_for(
        lambda: "tether-user-carol-view" not in bindings(inside),
        timeout=30,
        what="carol's binding inside the tenant pruned",
    )
    await wait_for(
        lambda: not any("carol" in n for n in names(host, "RoleBinding", sns)),
        timeout=30,
        what="carol's RoleBinding in the space pruned",
    )
    kc = await member_kubectl(stack, stack.admin_token, "space", "tp", "s1", tmp_path / "carol-after")
    kc.env["TETHER_TOKEN"] = carol

    async def refused() -> bool:
        code, _out, err = await kc.run("get", "configmaps")
        return code != 0 and "Forbidden" in err

    await wait_for(refused, timeout=10, what="carol refused once she left the project")
