"""Deploying the agent: the manifests on a real API server, least privilege checked per verb; Helm renders the same."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.drivers.kube import KubeApi, KubeDriver
from agent.drivers.kube_objects import namespace_name
from agent.drivers.vcluster import MANAGED_BY
from agent.errors import DriverError
from agent.settings import AgentSettings
from services.api import manifests
from tests.kube.cluster import ROOT, ControlPlane, KubeBinUnavailable, build_helm, unavailable
from tests.kube.helpers import (
    TENANT_HOSTS,
    can,
    command,
    get,
    member,
    names,
    wait_gone,
    write_tenant_kubeconfig,
)

pytestmark = pytest.mark.kube

TOKEN = "tct.edge-1.s3cr3t"
SERVER = "nats://platform.example.com:4222"
AGENT = manifests.AGENT_USER
AGENT_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tether-agent", "system:authenticated")
CHART = ROOT / "agent" / "deploy" / "helm" / "tether-agent"


def by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


@pytest.fixture(scope="module")
def installed(control_plane: ControlPlane) -> Iterator[Path]:
    """The agent's manifests applied (as ``kubectl apply`` would); yields a kubeconfig of its ServiceAccount."""
    api = KubeApi.from_kubeconfig(control_plane.kubeconfig())
    try:
        for obj in yaml.safe_load_all(manifests.render(cluster="edge-1", token=TOKEN, server=SERVER)):
            api.apply(obj, field_manager="kubectl")
        token = api.request(
            "POST",
            "/api/v1/namespaces/tether-agent/serviceaccounts/tether-agent/token",
            body={
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600},
            },
        )["status"]["token"]
        path = control_plane.write_token_kubeconfig(control_plane.workdir / "kubeconfig-agent", AGENT, token)
        # The admission policy takes effect once the API server has loaded it.
        agent_api = KubeApi.from_kubeconfig(path)
        deadline = time.monotonic() + 15
        probe = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "probe", "namespace": "default"}}
        while True:
            try:
                agent_api.apply(probe)
            except DriverError as exc:
                if "ValidatingAdmissionPolicy" in str(exc):
                    break
                raise
            api.delete("ServiceAccount", "probe", "default")
            assert time.monotonic() < deadline, "the admission policy never took effect"
            time.sleep(0.2)
        agent_api.close()
        yield path
    finally:
        api.close()


def test_the_manifests_hold_what_the_agent_needs() -> None:
    objs = by_key(list(yaml.safe_load_all(manifests.render(cluster="edge-1", token=TOKEN, server=SERVER))))
    assert set(objs) == {
        ("Namespace", "tether-agent"),
        ("ServiceAccount", "tether-agent"),
        ("ClusterRole", "tether-agent"),
        ("ClusterRole", "tether-tenant-syncer"),
        ("ClusterRoleBinding", "tether-agent"),
        ("ValidatingAdmissionPolicy", "tether-agent-namespaces"),
        ("ValidatingAdmissionPolicyBinding", "tether-agent-namespaces"),
        ("ClusterRole", "tether-agent-impersonate"),
        ("ClusterRoleBinding", "tether-agent-impersonate"),
        ("ValidatingAdmissionPolicy", "tether-agent-impersonation"),
        ("ValidatingAdmissionPolicyBinding", "tether-agent-impersonation"),
        ("Role", "tether-agent"),
        ("RoleBinding", "tether-agent"),
        ("Secret", "tether-agent-token"),
        ("Secret", "tether-agent-state"),
        ("Deployment", "tether-agent"),
    }
    assert objs[("Secret", "tether-agent-token")]["stringData"] == {"token": TOKEN}
    pod = objs[("Deployment", "tether-agent")]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tether-agent"
    [container] = pod["containers"]
    assert container["image"] == f"ghcr.io/tether-dev/tether-agent:{manifests.VERSION}"
    assert container["args"] == ["run", "--driver", "kube", "--server", SERVER, "--state-dir", "/var/lib/tether-agent"]
    env = {e["name"]: e for e in container["env"]}
    assert env["TETHER_AGENT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "tether-agent-token"
    assert env["TETHER_AGENT_STATE_SECRET"]["value"] == "tether-agent/tether-agent-state"
    assert objs[("Deployment", "tether-agent")]["spec"]["strategy"] == {"type": "Recreate"}
    custom = manifests.objects(cluster="c", token="t", server="s", image="registry.local/agent:dev")
    assert by_key(custom)[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "registry.local/agent:dev"
    )


@pytest.mark.parametrize(
    ("verb", "resource", "group", "namespace", "name"),
    [
        *[(v, "namespaces", "", "", "") for v in ("get", "list", "create", "patch", "delete")],
        ("get", "namespaces", "", "", "kube-system"),  # the cluster's UID
        *[(v, "nodes", "", "", "") for v in ("get", "list")],
        *[
            (v, r, g, "tether-p-s", "")
            for r, g in (
                ("serviceaccounts", ""),
                ("services", ""),
                ("resourcequotas", ""),
                ("limitranges", ""),
                ("rolebindings", "rbac.authorization.k8s.io"),
                ("statefulsets", "apps"),
                ("networkpolicies", "networking.k8s.io"),
            )
            for v in ("get", "list", "create", "patch", "delete")
        ],
        ("list", "rolebindings", "rbac.authorization.k8s.io", "", ""),  # inventory: one list per kind
        ("list", "statefulsets", "apps", "", ""),
        ("create", "secrets", "", "tether-t-p-t", ""),  # a tenant's vCluster configuration
        *[(v, "secrets", "", "tether-t-p-t", "vc-config-vcluster") for v in ("get", "patch", "delete")],
        ("get", "secrets", "", "tether-t-p-t", "vc-vcluster"),  # the tenant's kubeconfig, to reach its API
        *[(v, "pods", "", "tether-t-p-t", "") for v in ("get", "list", "delete")],  # readiness, sleep
        ("list", "pods", "", "", ""),  # every tenant's status in one list
        *[
            ("bind", "clusterroles", "rbac.authorization.k8s.io", "", r)
            for r in ("admin", "edit", "view", "tether-tenant-syncer")
        ],
        *[
            ("get", "secrets", "", "tether-agent", "tether-agent-state"),
            ("patch", "secrets", "", "tether-agent", "tether-agent-state"),
        ],
    ],
)
def test_the_agent_may_do_what_the_driver_does(
    installed: Path, admin_api: KubeApi, verb: str, resource: str, group: str, namespace: str, name: str
) -> None:
    assert can(
        admin_api,
        user=AGENT,
        groups=AGENT_GROUPS,
        verb=verb,
        resource=resource,
        group=group,
        namespace=namespace,
        name=name,
    )


@pytest.mark.parametrize(
    ("verb", "resource", "group", "namespace", "name", "subresource"),
    [
        ("list", "secrets", "", "", "", ""),
        ("get", "secrets", "", "kube-system", "", ""),
        ("get", "secrets", "", "tether-p-s", "", ""),
        ("get", "secrets", "", "tether-agent", "tether-agent-token", ""),
        ("list", "secrets", "", "tether-agent", "", ""),
        ("create", "clusterrolebindings", "rbac.authorization.k8s.io", "", "", ""),
        ("create", "clusterroles", "rbac.authorization.k8s.io", "", "", ""),
        ("patch", "clusterroles", "rbac.authorization.k8s.io", "", "tether-agent", ""),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", "", "cluster-admin", ""),
        ("escalate", "roles", "rbac.authorization.k8s.io", "tether-p-s", "", ""),
        ("impersonate", "users", "", "", "", ""),
        ("impersonate", "serviceaccounts", "", "kube-system", "", ""),
        ("create", "pods", "", "tether-p-s", "", ""),
        ("patch", "pods", "", "tether-t-p-t", "vcluster-0", ""),
        ("create", "pods", "", "tether-p-s", "x", "exec"),
        ("get", "pods", "", "tether-t-p-t", "x", "log"),
        ("patch", "secrets", "", "tether-t-p-t", "vc-vcluster", ""),  # read the tenant's kubeconfig, never write it
        ("get", "secrets", "", "tether-t-p-t", "x-x-default-x-vcluster", ""),  # what tenants sync: theirs
        ("create", "roles", "rbac.authorization.k8s.io", "tether-t-p-t", "", ""),
        ("create", "persistentvolumeclaims", "", "tether-t-p-t", "", ""),
        ("create", "endpoints", "", "tether-t-p-t", "", ""),
        ("bind", "clusterroles", "rbac.authorization.k8s.io", "", "edit-all", ""),
        ("create", "deployments", "apps", "tether-p-s", "", ""),
        ("create", "daemonsets", "apps", "kube-system", "", ""),
        ("list", "configmaps", "", "", "", ""),
        ("get", "configmaps", "", "kube-system", "kube-proxy", ""),
        ("patch", "nodes", "", "", "n1", ""),
        ("delete", "nodes", "", "", "n1", ""),
        ("create", "serviceaccounts", "", "kube-system", "x", "token"),
        ("patch", "validatingadmissionpolicies", "admissionregistration.k8s.io", "", "tether-agent-namespaces", ""),
        ("delete", "validatingadmissionpolicybindings", "admissionregistration.k8s.io", "", "", ""),
        ("create", "customresourcedefinitions", "apiextensions.k8s.io", "", "", ""),
        ("create", "certificatesigningrequests", "certificates.k8s.io", "", "", ""),
        ("get", "leases", "coordination.k8s.io", "kube-system", "kube-controller-manager", ""),
        ("update", "namespaces", "", "", "", ""),
        ("watch", "namespaces", "", "", "", ""),
    ],
)
def test_the_agent_may_do_nothing_more(
    installed: Path,
    admin_api: KubeApi,
    verb: str,
    resource: str,
    group: str,
    namespace: str,
    name: str,
    subresource: str,
) -> None:
    assert not can(
        admin_api,
        user=AGENT,
        groups=AGENT_GROUPS,
        verb=verb,
        resource=resource,
        group=group,
        namespace=namespace,
        name=name,
        subresource=subresource,
    )


async def test_the_driver_works_with_exactly_these_rights(
    installed: Path, admin_api: KubeApi, tenant_api_server: ControlPlane, tmp_path: Path
) -> None:
    """Every operation, as the agent's ServiceAccount: nothing is refused."""
    driver = KubeDriver(
        AgentSettings(driver="kube", kubeconfig=installed, state_dir=tmp_path / "agent"), environ=TENANT_HOSTS
    )
    alice = member("user:alice", "admin")
    try:
        assert await driver.cluster_uid() == get(admin_api, "Namespace", "kube-system")["metadata"]["uid"]
        assert (await driver.health()).api_reachable
        for step in (
            command("tenant", "rbac", "t1", 1, version="v1.35", members=(alice,)),
            command("tenant", "rbac", "t1", 2, "sleeping", version="v1.35"),
            command("tenant", "rbac", "t1", 3, version="v1.35"),
            command("tenant", "rbac", "t1", 4, version="v1.36"),
            command("space", "rbac", "s1", 1, members=(alice, member("team:devs", "view"))),
            command("space", "rbac", "s1", 2, members=(member("user:alice", "edit"),)),
            command("space", "rbac", "s1", 3, "sleeping", members=()),
        ):
            assert (await driver.apply(step)).applied, step
        inventory = {(i.kind, i.name): i.generation for i in await driver.inventory() if i.project == "rbac"}
        assert inventory == {("tenant", "t1"): 4, ("space", "s1"): 3}
        assert await driver.control_planes()
        # the tenant's status as the agent: its API reached through its kubeconfig Secret, members applied inside
        tns = namespace_name("tenant", "rbac", "t1")
        write_tenant_kubeconfig(admin_api, tns, tenant_api_server)
        deadline = asyncio.get_running_loop().time() + 60
        while not any(s.settled for s in await driver.statuses() if s.name == "t1" and s.project == "rbac"):
            assert asyncio.get_running_loop().time() < deadline, await driver.statuses()
            await asyncio.sleep(0.2)
        # sleep deletes what vCluster synced, as the agent
        admin_api.apply(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": "w-x-d-x-vcluster", "namespace": tns, "labels": {MANAGED_BY: "vcluster"}},
                "spec": {"containers": [{"name": "w", "image": "example.invalid/w:1"}]},
            },
            field_manager="vcluster",
        )
        assert (await driver.apply(command("tenant", "rbac", "t1", 5, "sleeping", version="v1.36"))).applied
        assert admin_api.get("Pod", "w-x-d-x-vcluster", tns) is None or (
            admin_api.get("Pod", "w-x-d-x-vcluster", tns) or {}
        ).get("metadata", {}).get("deletionTimestamp")
        # drift repair as the agent
        admin_api.delete("RoleBinding", "vc-vcluster", tns)
        await driver.apply(command("tenant", "rbac", "t1", 5, "sleeping", version="v1.36"))
        assert "vc-vcluster" in names(admin_api, "RoleBinding", tns)
        for kind, name in (("tenant", "t1"), ("space", "s1")):
            assert (await driver.apply(command(kind, "rbac", name, 9, "deleted"))).applied  # type: ignore[arg-type]
            await wait_gone(admin_api, namespace_name(kind, "rbac", name))  # type: ignore[arg-type]
    finally:
        await driver.close()


async def test_the_agent_cannot_write_outside_its_namespaces(installed: Path, admin_api: KubeApi) -> None:
    agent = KubeApi.from_kubeconfig(installed)
    try:
        with pytest.raises(DriverError) as outside:
            agent.apply(
                {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "x", "namespace": "default"}}
            )
        assert outside.value.reason == "Forbidden" and "tether.dev/managed-by=tether" in str(outside.value)
        with pytest.raises(DriverError) as adopt:
            agent.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": "kube-public", "labels": {"tether.dev/managed-by": "tether"}},
                }
            )
        assert adopt.value.reason == "Forbidden"
        with pytest.raises(DriverError) as delete:
            agent.delete("Namespace", "kube-node-lease")
        assert delete.value.reason == "Forbidden"
        with pytest.raises(DriverError) as binding:
            agent.apply(
                {
                    "apiVersion": "rbac.authorization.k8s.io/v1",
                    "kind": "RoleBinding",
                    "metadata": {"name": "x", "namespace": "kube-system"},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                    "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"}],
                }
            )
        assert binding.value.reason == "Forbidden"
        assert get(admin_api, "Namespace", "kube-node-lease")["metadata"].get("deletionTimestamp") is None
        assert "tether.dev/managed-by" not in (
            get(admin_api, "Namespace", "kube-public")["metadata"].get("labels") or {}
        )
    finally:
        agent.close()


async def test_credentials_survive_in_the_state_secret(installed: Path, admin_api: KubeApi, tmp_path: Path) -> None:
    """In a cluster the state directory is an emptyDir: the credentials live in the Secret tether-agent-state."""
    env = {"TETHER_AGENT_STATE_SECRET": "tether-agent/tether-agent-state"}
    first = tmp_path / "pod-1"
    first.mkdir()
    driver = KubeDriver(AgentSettings(driver="kube", kubeconfig=installed, state_dir=first), environ=env)
    try:
        (first / "credentials.json").write_text('{"cluster": "edge-1", "credential": "tac.edge-1.x", "server": "s"}')
        await driver.health()  # every heartbeat saves what changed
    finally:
        await driver.close()
    assert "credentials.json" in get(admin_api, "Secret", "tether-agent-state", "tether-agent")["data"]
    second = tmp_path / "pod-2"
    driver = KubeDriver(AgentSettings(driver="kube", kubeconfig=installed, state_dir=second), environ=env)
    await driver.close()
    restored = yaml.safe_load((second / "credentials.json").read_text())
    assert restored == {"cluster": "edge-1", "credential": "tac.edge-1.x", "server": "s"}
    assert (second / "credentials.json").stat().st_mode & 0o077 == 0


def test_helm_renders_the_same_objects(tmp_path: Path) -> None:
    try:
        helm = build_helm()
    except KubeBinUnavailable as exc:
        unavailable("helm", exc)
    for image in ("", "registry.local/tether-agent:dev"):
        args = [
            str(helm),
            "template",
            "tether-agent",
            str(CHART),
            "--kube-version",
            "1.36.5",
            "--set",
            "cluster=edge-1",
            "--set",
            f"token={TOKEN}",
            "--set",
            f"server={SERVER}",
        ]
        if image:
            repo, tag = image.rsplit(":", 1)
            args += ["--set", f"image.repository={repo}", "--set", f"image.tag={tag}"]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
        from_helm = by_key([d for d in yaml.safe_load_all(out) if d])
        expected = manifests.objects(
            cluster="edge-1", token=TOKEN, server=SERVER, **({"image": image} if image else {})
        )
        assert from_helm == by_key(expected)
    missing = subprocess.run(
        [str(helm), "template", "x", str(CHART), "--kube-version", "1.36.5"], capture_output=True, text=True
    )
    assert missing.returncode != 0 and "set cluster" in missing.stderr


def test_the_sidecar_example_runs_the_same_agent(installed: Path, admin_api: KubeApi) -> None:
    """sidecar.yaml applies, its agent container is the Deployment's, and its ServiceAccount is confined too."""
    docs = list(yaml.safe_load_all((ROOT / "agent" / "deploy" / "sidecar.yaml").read_text()))
    admin_api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "my-app"}}, field_manager="kubectl")
    for obj in docs:
        admin_api.apply(obj, field_manager="kubectl")
    pod = by_key(docs)[("Deployment", "my-app")]["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    agent = next(c for c in pod["containers"] if c["name"] == "tether-agent")
    reference = manifests.agent_container(server="NATS_URL", image=manifests.DEFAULT_IMAGE)
    for field in ("image", "command", "args", "resources", "securityContext"):
        assert agent[field] == reference[field], field
    assert [e["name"] for e in agent["env"]] == [e["name"] for e in reference["env"]]
    assert {"name": "TETHER_AGENT_STATE_SECRET", "value": "my-app/tether-agent-state"} in agent["env"]
    user = "system:serviceaccount:my-app:tether-agent"
    groups = ("system:serviceaccounts", "system:serviceaccounts:my-app", "system:authenticated")
    assert can(admin_api, user=user, groups=groups, verb="create", resource="namespaces")
    assert can(
        admin_api,
        user=user,
        groups=groups,
        verb="patch",
        resource="secrets",
        namespace="my-app",
        name="tether-agent-state",
    )
    assert not can(admin_api, user=user, groups=groups, verb="get", resource="secrets", namespace="my-app", name="x")
    token = admin_api.request(
        "POST",
        "/api/v1/namespaces/my-app/serviceaccounts/tether-agent/token",
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}},
    )["status"]["token"]
    cfg = yaml.safe_load(installed.read_text())
    cfg["users"][0]["user"]["token"] = token
    path = installed.parent / "kubeconfig-sidecar"
    path.write_text(yaml.safe_dump(cfg))
    sidecar = KubeApi.from_kubeconfig(path)
    try:
        with pytest.raises(DriverError) as outside:
            sidecar.apply(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "x", "namespace": "my-app"},
                    "spec": {"ports": [{"port": 80}]},
                }
            )
        assert outside.value.reason == "Forbidden" and "ValidatingAdmissionPolicy" in str(outside.value)
    finally:
        sidecar.close()
