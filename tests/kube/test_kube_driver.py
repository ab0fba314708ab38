"""The kube driver against a real kube-apiserver: every step of a tenant and a space, access, drift, errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.commands import CommandApplier
from agent.drivers.kube import KubeApi, KubeDriver
from agent.drivers.kube_objects import TenantSettings, namespace_name
from agent.drivers.vcluster import VClusterSettings
from agent.errors import DriverError
from agent.settings import AgentSettings
from schemas import subjects
from schemas.messages import CommandResult, ResultRecorded, WorkloadRecord, encode
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import GiB, can, command, get, member, names, wait_gone

pytestmark = pytest.mark.kube

OWNER_LABELS = ("tether.dev/managed-by", "tether.dev/kind", "tether.dev/project", "tether.dev/name")


def labels(obj: dict[str, object]) -> dict[str, str]:
    return dict(obj["metadata"].get("labels") or {})  # type: ignore[attr-defined]


def annotations(obj: dict[str, object]) -> dict[str, str]:
    return dict(obj["metadata"].get("annotations") or {})  # type: ignore[attr-defined]


def image_of(api: KubeApi, ns: str) -> str:
    """The image of the tenant's Kubernetes binaries (its version)."""
    sts = get(api, "StatefulSet", "vcluster", ns)
    return str(sts["spec"]["template"]["spec"]["initContainers"][0]["image"])


def replicas_of(api: KubeApi, ns: str) -> int:
    return int(get(api, "StatefulSet", "vcluster", ns)["spec"]["replicas"])


async def test_tenant_create_sleep_wake_upgrade_delete(driver: KubeDriver, admin_api: KubeApi) -> None:
    api = admin_api
    ns = namespace_name("tenant", "lc", "t1")
    assert ns == "tether-t-lc-t1"
    alice = member("user:alice", "admin")

    # create
    out = await driver.apply(command("tenant", "lc", "t1", 1, version="v1.35", members=(alice,)))
    assert (out.applied, out.state, out.version, out.generation) == (True, "running", "v1.35", 1)
    namespace = get(api, "Namespace", ns)
    assert {k: labels(namespace)[k] for k in OWNER_LABELS} == {
        "tether.dev/managed-by": "tether",
        "tether.dev/kind": "tenant",
        "tether.dev/project": "lc",
        "tether.dev/name": "t1",
    }
    ann = annotations(namespace)
    assert ann["tether.dev/generation"] == "1" and ann["tether.dev/op-id"].startswith("op-")
    assert ann["tether.dev/state"] == "running" and "tether.dev/slept-at" not in ann
    assert names(api, "ServiceAccount", ns) >= {"vc-vcluster"}
    assert names(api, "Role", ns) == set(), "the syncer's rules are the installed ClusterRole's, bound here"
    # The only RoleBinding on the host is the syncer's own: members get none.
    assert names(api, "RoleBinding", ns) == {"vc-vcluster"}
    binding = get(api, "RoleBinding", "vc-vcluster", ns)
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "vc-vcluster", "namespace": ns}]
    assert binding["roleRef"]["name"] == "tether-tenant-syncer"
    assert "vc-config-vcluster" in names(api, "Secret", ns)
    assert replicas_of(api, ns) == 1
    assert image_of(api, ns) == "ghcr.io/loft-sh/kubernetes:v1.35.0"
    sts = get(api, "StatefulSet", "vcluster", ns)
    container = sts["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/loft-sh/vcluster-oss:0.36.1"
    assert container["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}
    assert sts["spec"]["template"]["spec"]["serviceAccountName"] == "vc-vcluster"
    assert get(api, "Service", "vcluster", ns)["spec"]["ports"][0]["targetPort"] == 8443
    quota = get(api, "ResourceQuota", "tether-quota", ns)
    assert quota["spec"]["hard"] == {
        "requests.cpu": "1",
        "limits.cpu": "1",
        "requests.memory": "2Gi",
        "limits.memory": "2Gi",
    }
    assert names(api, "LimitRange", ns) == {"tether-limits"}
    policy = get(api, "NetworkPolicy", "tether-isolation", ns)
    assert policy["spec"]["ingress"][0] == {"from": [{"podSelector": {}}]}
    assert policy["spec"]["ingress"][1]["ports"] == [{"protocol": "TCP", "port": 8443}], "the agent reaches the API"
    assert policy["spec"]["podSelector"] == {}
    for kind, name in (("ServiceAccount", "vc-vcluster"), ("StatefulSet", "vcluster")):
        obj = get(api, kind, name, ns)
        assert labels(obj)["tether.dev/managed-by"] == "tether"
        assert annotations(obj)["tether.dev/generation"] == "1"
        assert any(f.get("manager") == "tether-agent" for f in obj["metadata"]["managedFields"])
    inv = {(i.kind, i.project, i.name): i for i in await driver.inventory()}
    item = inv[("tenant", "lc", "t1")]
    assert (item.generation, item.state, item.version) == (1, "running", "v1.35")
    assert item.last_activity > 0

    # the same generation again: nothing to do
    again = await driver.apply(command("tenant", "lc", "t1", 1, version="v1.35", members=(alice,)))
    assert (again.applied, again.state, again.generation) == (False, "running", 1)

    # sleep
    out = await driver.apply(command("tenant", "lc", "t1", 2, "sleeping", version="v1.35"))
    assert (out.applied, out.state) == (True, "sleeping")
    assert replicas_of(api, ns) == 0
    ann = annotations(get(api, "Namespace", ns))
    assert ann["tether.dev/state"] == "sleeping" and float(ann["tether.dev/slept-at"]) > 0
    inv = {(i.kind, i.project, i.name): i for i in await driver.inventory()}
    assert (inv[("tenant", "lc", "t1")].generation, inv[("tenant", "lc", "t1")].state) == (2, "sleeping")

    # wake
    out = await driver.apply(command("tenant", "lc", "t1", 3, version="v1.35"))
    assert (out.applied, out.state) == (True, "running")
    assert replicas_of(api, ns) == 1
    assert "tether.dev/slept-at" not in annotations(get(api, "Namespace", ns))

    # upgrade: the Kubernetes image's tag is the version
    out = await driver.apply(command("tenant", "lc", "t1", 4, version="v1.36"))
    assert (out.applied, out.version) == (True, "v1.36")
    assert image_of(api, ns) == "ghcr.io/loft-sh/kubernetes:v1.36.0"
    assert annotations(get(api, "Namespace", ns))["tether.dev/version"] == "v1.36"

    # an older command (a late redelivery) changes nothing
    old = await driver.apply(command("tenant", "lc", "t1", 2, "sleeping", version="v1.35"))
    assert (old.applied, old.state, old.version, old.generation) == (False, "running", "v1.36", 4)
    assert replicas_of(api, ns) == 1

    # delete: the namespace goes, and everything in it with it
    out = await driver.apply(command("tenant", "lc", "t1", 5, "deleted"))
    assert (out.applied, out.state, out.generation) == (True, "deleted", 5)
    namespace = api.get("Namespace", ns)
    # The namespace controller may already have removed it; while it has not, it is terminating.
    if namespace is not None:
        assert namespace["metadata"].get("deletionTimestamp"), "the namespace is being deleted"
        assert annotations(namespace)["tether.dev/generation"] == "5"
        again = await driver.apply(command("tenant", "lc", "t1", 5, "deleted"))
        assert again.state == "deleted"
    # while it terminates, the inventory reports it deleted at the delete's generation (then not at all)
    leaving = [i for i in await driver.inventory() if (i.kind, i.project, i.name) == ("tenant", "lc", "t1")]
    assert all((i.state, i.generation) == ("deleted", 5) for i in leaving)
    # creating it again waits until the old namespace is gone (transient)
    if api.get("Namespace", ns) is not None:
        with pytest.raises(DriverError) as waiting:
            await driver.apply(command("tenant", "lc", "t1", 6, version="v1.36"))
        assert waiting.value.transient and waiting.value.reason == "NamespaceTerminating"
    await wait_gone(api, ns)
    gone = await driver.apply(command("tenant", "lc", "t1", 5, "deleted"))
    assert (gone.applied, gone.state) == (True, "deleted")


async def test_space_lifecycle_and_membership(driver: KubeDriver, admin_api: KubeApi) -> None:
    api = admin_api
    ns = namespace_name("space", "sp", "s1")
    assert ns == "tether-sp-s1"
    alice, devs = member("user:alice", "admin"), member("team:devs", "view")
    out = await driver.apply(command("space", "sp", "s1", 1, members=(alice, devs), cpu=0.5, memory=GiB))
    assert (out.applied, out.state, out.version) == (True, "running", "")
    assert names(api, "RoleBinding", ns) == {"tether-user-alice-admin", "tether-team-devs-view"}
    rb = get(api, "RoleBinding", "tether-user-alice-admin", ns)
    assert rb["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"}
    assert rb["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tether:user:alice"}]
    rb = get(api, "RoleBinding", "tether-team-devs-view", ns)
    assert rb["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "tether:team:devs"}]
    assert get(api, "ResourceQuota", "tether-quota", ns)["spec"]["hard"]["requests.cpu"] == "500m"
    assert names(api, "NetworkPolicy", ns) == {"tether-isolation"}
    assert names(api, "StatefulSet", ns) == set() and names(api, "ServiceAccount", ns) <= {"default"}

    # access is what the bindings say, only in the member's own space
    assert can(api, user="tether:user:alice", verb="create", resource="deployments", group="apps", namespace=ns)
    assert not can(
        api, user="tether:user:alice", verb="create", resource="deployments", group="apps", namespace="default"
    )
    assert not can(api, user="tether:user:alice", verb="list", resource="namespaces")
    assert can(api, user="tether:user:bob", groups=("tether:team:devs",), verb="list", resource="pods", namespace=ns)
    assert not can(
        api, user="tether:user:bob", groups=("tether:team:devs",), verb="create", resource="pods", namespace=ns
    )

    # membership changes: alice down to edit, devs removed, bob added
    bob = member("user:bob", "view")
    out = await driver.apply(
        command("space", "sp", "s1", 2, members=(member("user:alice", "edit"), bob), cpu=0.5, memory=GiB)
    )
    assert out.applied
    assert names(api, "RoleBinding", ns) == {"tether-user-alice-edit", "tether-user-bob-view"}
    assert get(api, "RoleBinding", "tether-user-alice-edit", ns)["roleRef"]["name"] == "edit"
    assert not can(
        api, user="tether:user:carol", groups=("tether:team:devs",), verb="list", resource="pods", namespace=ns
    )
    assert can(api, user="tether:user:bob", verb="list", resource="pods", namespace=ns)

    # sleep: no new pods; wake: back
    await driver.apply(command("space", "sp", "s1", 3, "sleeping", members=(bob,), cpu=0.5, memory=GiB))
    assert get(api, "ResourceQuota", "tether-quota", ns)["spec"]["hard"]["pods"] == "0"
    assert names(api, "RoleBinding", ns) == {"tether-user-bob-view"}
    inv = {(i.kind, i.project, i.name): i for i in await driver.inventory()}
    assert (inv[("space", "sp", "s1")].state, inv[("space", "sp", "s1")].generation) == ("sleeping", 3)
    await driver.apply(command("space", "sp", "s1", 4, members=(bob,), cpu=0.5, memory=GiB))
    assert "pods" not in get(api, "ResourceQuota", "tether-quota", ns)["spec"]["hard"]

    # delete
    out = await driver.apply(command("space", "sp", "s1", 5, "deleted"))
    assert (out.applied, out.state) == (True, "deleted")
    namespace = api.get("Namespace", ns)
    assert namespace is None or namespace["metadata"].get("deletionTimestamp")
    await wait_gone(api, ns)


async def test_drift_is_put_back_by_the_next_resync(driver: KubeDriver, admin_api: KubeApi) -> None:
    api = admin_api
    tenant_ns, space_ns = namespace_name("tenant", "dr", "t1"), namespace_name("space", "dr", "s1")
    create_tenant = command("tenant", "dr", "t1", 1, version="v1.35")
    create_space = command("space", "dr", "s1", 1, members=(member("user:alice", "edit"),))
    await driver.apply(create_tenant)
    await driver.apply(create_space)
    assert {(i.name, i.generation) for i in await driver.inventory() if i.project == "dr"} == {("t1", 1), ("s1", 1)}

    # by hand: a RoleBinding and a NetworkPolicy deleted, the StatefulSet scaled and re-imaged, an extra binding
    api.delete("RoleBinding", "vc-vcluster", tenant_ns)
    api.patch_merge("StatefulSet", "vcluster", {"spec": {"replicas": 3}}, tenant_ns)
    # a JSON patch, not GET+PUT: the StatefulSet controller updates the status meanwhile (409 Conflict)
    api.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/{tenant_ns}/statefulsets/vcluster",
        body=[{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:latest"}],
        content_type="application/json-patch+json",
    )
    api.delete("NetworkPolicy", "tether-isolation", space_ns)
    api.delete("RoleBinding", "tether-user-alice-edit", space_ns)

    # the inventory reports them as not at their generation, so the platform sends them again
    stale = {(i.name, i.generation) for i in await driver.inventory() if i.project == "dr"}
    assert stale == {("t1", 0), ("s1", 0)}

    # a resync re-sends the same generation (another op id): everything is put back
    resync_tenant = command("tenant", "dr", "t1", 1, version="v1.35", operation="resync")
    resync_space = command("space", "dr", "s1", 1, members=(member("user:alice", "edit"),), operation="resync")
    out = await driver.apply(resync_tenant)
    assert (out.applied, out.generation) == (False, 1)
    await driver.apply(resync_space)
    assert names(api, "RoleBinding", tenant_ns) == {"vc-vcluster"}
    assert replicas_of(api, tenant_ns) == 1
    container = get(api, "StatefulSet", "vcluster", tenant_ns)["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/loft-sh/vcluster-oss:0.36.1"
    assert names(api, "NetworkPolicy", space_ns) == {"tether-isolation"}
    assert names(api, "RoleBinding", space_ns) == {"tether-user-alice-edit"}
    # the repair keeps the operation that made the generation
    assert annotations(get(api, "Namespace", tenant_ns))["tether.dev/op-id"] == create_tenant.op_id
    assert {(i.name, i.generation) for i in await driver.inventory() if i.project == "dr"} == {("t1", 1), ("s1", 1)}

    # an owned object that should not be there is drift too, and is removed
    api.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {
                "name": "tether-user-mallory-admin",
                "namespace": space_ns,
                "labels": {
                    "tether.dev/managed-by": "tether",
                    "tether.dev/kind": "space",
                    "tether.dev/project": "dr",
                    "tether.dev/name": "s1",
                },
            },
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "tether:user:mallory"}],
        },
        field_manager="kubectl",
    )
    assert {(i.name, i.generation) for i in await driver.inventory() if i.project == "dr"} == {("t1", 1), ("s1", 0)}
    await driver.apply(resync_space)
    assert names(api, "RoleBinding", space_ns) == {"tether-user-alice-edit"}


async def test_objects_without_the_owner_label_are_never_touched(driver: KubeDriver, admin_api: KubeApi) -> None:
    api = admin_api
    # a namespace that happens to have the space's name, not made by Tether
    taken = namespace_name("space", "un", "taken")
    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": taken, "labels": {"team": "ops"}}})
    with pytest.raises(DriverError) as refused:
        await driver.apply(command("space", "un", "taken", 1))
    assert refused.value.reason == "Conflict" and not refused.value.transient
    assert "no owner label" in str(refused.value)
    assert labels(get(api, "Namespace", taken)) == {"team": "ops", "kubernetes.io/metadata.name": taken}
    assert names(api, "RoleBinding", taken) == set()
    # a delete of it leaves it alone too
    out = await driver.apply(command("space", "un", "taken", 2, "deleted"))
    assert out.state == "deleted" and not get(api, "Namespace", taken)["metadata"].get("deletionTimestamp")
    assert "taken" not in {i.name for i in await driver.inventory()}

    # a member's own RoleBinding in their space stays through membership changes
    ns = namespace_name("space", "un", "s1")
    await driver.apply(command("space", "un", "s1", 1, members=(member("user:alice", "admin"),)))
    own = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alices-helper", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "helper"}],
    }
    api.apply(own, field_manager="kubectl")
    await driver.apply(command("space", "un", "s1", 2, members=()))
    assert names(api, "RoleBinding", ns) == {"alices-helper"}
    assert [i.generation for i in await driver.inventory() if (i.project, i.name) == ("un", "s1")] == [2]

    # one of ours replaced by an unlabelled object of the same name: refused, and left as it is
    tns = namespace_name("tenant", "un", "t1")
    await driver.apply(command("tenant", "un", "t1", 1, version="v1.35"))
    api.delete("ServiceAccount", "vc-vcluster", tns)
    api.create({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vc-vcluster", "namespace": tns}})
    with pytest.raises(DriverError) as refused:
        await driver.apply(command("tenant", "un", "t1", 2, version="v1.36"))
    assert refused.value.reason == "Conflict"
    assert "ServiceAccount" in str(refused.value)
    assert "tether.dev/managed-by" not in labels(get(api, "ServiceAccount", "vc-vcluster", tns))
    assert image_of(api, tns).endswith("kubernetes:v1.35.0"), "nothing of the refused command was applied"


async def test_too_little_rbac_is_a_clear_failed_command(
    control_plane: ControlPlane, admin_api: KubeApi, tmp_path: Path
) -> None:
    """The agent's identity can manage namespaces but not RoleBindings: the command fails with Forbidden."""
    api = admin_api
    api.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "narrow-agent"},
            "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "patch", "create"]}],
        }
    )
    api.apply(
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "narrow-agent"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "narrow-agent"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "narrow"}],
        }
    )
    settings = AgentSettings(driver="kube", kubeconfig=control_plane.narrow_kubeconfig(), state_dir=tmp_path / "a")
    narrow = KubeDriver(settings, environ={})
    results: list[CommandResult] = []

    async def publish(result: CommandResult) -> ResultRecorded:
        results.append(result)
        return ResultRecorded(outcome="recorded")

    class Receipt:
        subject, num_delivered, settled = f"{subjects.desired_prefix('c1')}c1.space.rb.s1", 1, ""

        def __init__(self, data: bytes) -> None:
            self.data = data

        async def ack(self) -> None:
            self.settled = "ack"

        async def nak(self, delay: float | None = None) -> None:
            self.settled = "nak"

        async def term(self) -> None:
            self.settled = "term"

        async def in_progress(self) -> None:
            pass

    try:
        applier = CommandApplier("c1", narrow, publish)
        cmd = command("space", "rb", "s1", 1, members=(member("user:alice", "admin"),))
        # What the agent's consumer delivers: the desired-state record the command is.
        stored = WorkloadRecord(spec=cmd.spec, generation=cmd.generation, op_id=cmd.op_id, operation="create")
        receipt = Receipt(encode(stored))
        handled = await applier.handle(receipt)
    finally:
        await narrow.close()
    assert handled.disposition == "acked" and receipt.settled == "ack", "a permanent failure is reported, not retried"
    [result] = results
    assert (result.ok, result.reason) == (False, "Forbidden")
    assert "rolebindings.rbac.authorization.k8s.io" in result.message and "forbidden" in result.message
    assert '"narrow"' in result.message, "the API server's own message, naming the identity"


async def test_api_errors_keep_the_servers_reason(admin_api: KubeApi, kubeconfig: Path, tmp_path: Path) -> None:
    api = admin_api
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "twice", "namespace": "default"}}
    api.create(cm)
    with pytest.raises(DriverError) as conflict:
        api.create(cm)
    assert (conflict.value.reason, conflict.value.transient) == ("Conflict", False)
    assert 'configmaps "twice" already exists' in str(conflict.value)

    invalid = KubeDriver(
        AgentSettings(driver="kube", kubeconfig=kubeconfig, state_dir=tmp_path / "a"),
        tenants=TenantSettings(vcluster=VClusterSettings(storage="-1Gi")),
        environ={},
    )
    try:
        with pytest.raises(DriverError) as bad:
            await invalid.apply(command("tenant", "inv", "t1", 1, version="v1.35"))
    finally:
        await invalid.close()
    assert (bad.value.reason, bad.value.transient) == ("Invalid", False)
    assert "StatefulSet.apps" in str(bad.value) and "must be greater than zero" in str(bad.value)

    plain = KubeDriver(AgentSettings(driver="kube", kubeconfig=kubeconfig, state_dir=tmp_path / "b"), environ={})
    try:
        with pytest.raises(DriverError) as spec:
            await plain.apply(command("tenant", "inv", "t2", 1, version="latest"))
    finally:
        await plain.close()
    assert spec.value.reason == "Invalid" and "invalid tenant version 'latest'" in str(spec.value)


async def test_an_unreachable_api_server_is_transient(control_plane: ControlPlane, tmp_path: Path) -> None:
    dead = control_plane.write_token_kubeconfig(tmp_path / "dead", "admin", control_plane.admin_token)
    dead.write_text(dead.read_text().replace(control_plane.url, "https://127.0.0.1:1"))
    d = KubeDriver(AgentSettings(driver="kube", kubeconfig=dead, state_dir=tmp_path / "a"), environ={})
    try:
        health = await d.health()
        assert health.api_reachable is False and health.driver == "kube"
        with pytest.raises(DriverError) as down:
            await d.apply(command("space", "down", "s1", 1))
        assert down.value.transient and down.value.reason == "ClusterUnreachable"
        with pytest.raises(DriverError):
            await d.inventory()
    finally:
        await d.close()


async def test_cluster_uid_is_the_kube_system_namespace_uid(
    driver: KubeDriver, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    uid = await driver.cluster_uid()
    assert uid == get(admin_api, "Namespace", "kube-system")["metadata"]["uid"]
    other = KubeDriver(AgentSettings(driver="kube", kubeconfig=kubeconfig, state_dir=tmp_path / "other"), environ={})
    try:
        assert await other.cluster_uid() == uid, "a second agent on the same cluster is the same cluster"
    finally:
        await other.close()


async def test_health_from_node_objects(driver: KubeDriver, admin_api: KubeApi) -> None:
    api = admin_api
    nodes = {"n1": ("4", "16Gi", "True"), "n2": ("3500m", "8Gi", "True"), "n3": ("8", "32Gi", "False")}
    base = await driver.health()  # the test cluster's own (kwok) nodes
    try:
        for name, (cpu, memory, ready) in nodes.items():
            api.create({"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"health-{name}"}})
            api.patch_status(
                "Node",
                f"health-{name}",
                {
                    "status": {
                        "capacity": {"cpu": cpu, "memory": memory, "pods": "110"},
                        "allocatable": {"cpu": cpu, "memory": memory, "pods": "110"},
                        "conditions": [{"type": "Ready", "status": ready, "reason": "Test", "message": "test"}],
                    }
                },
            )
        health = await driver.health()
        assert (health.nodes_ready - base.nodes_ready, health.nodes_total - base.nodes_total) == (2, 3)
        assert health.capacity.cpu - base.capacity.cpu == pytest.approx(7.5)
        assert health.capacity.memory - base.capacity.memory == 24 * GiB
        assert health.kubernetes_version == "v1.36.5"
        assert health.api_reachable and health.driver == "kube"
    finally:
        for name in nodes:
            api.delete("Node", f"health-{name}")


async def test_control_plane_readiness(driver: KubeDriver, admin_api: KubeApi) -> None:
    """Under kwok the running tenant's pod becomes Ready; without its API (no kubeconfig) it is not ready, and
    says why. The sleeping one has no pod."""
    await driver.apply(command("tenant", "rd", "t1", 1, version="v1.35"))
    await driver.apply(command("tenant", "rd", "t2", 1, "sleeping", version="v1.35"))
    deadline = asyncio.get_running_loop().time() + 60
    while True:
        planes = {(c.project, c.name): c for c in await driver.control_planes() if c.project == "rd"}
        t1 = planes[("rd", "t1")]
        if t1.ready_replicas == 1 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert (t1.ready_replicas, t1.ready, t1.reason, t1.pods) == (1, False, "KubeconfigMissing", 1)
    t2 = planes[("rd", "t2")]
    assert (t2.replicas, t2.ready, t2.pods) == (0, False, 0)


async def test_refused_credentials_make_the_cluster_unreachable(control_plane: ControlPlane, tmp_path: Path) -> None:
    """A token the API server does not accept (revoked, expired): commands wait instead of failing."""
    bad = control_plane.write_token_kubeconfig(tmp_path / "bad", "nobody", "not-a-valid-token")
    d = KubeDriver(AgentSettings(driver="kube", kubeconfig=bad, state_dir=tmp_path / "a"), environ={})
    try:
        assert (await d.health()).api_reachable is False
        with pytest.raises(DriverError) as refused:
            await d.apply(command("space", "auth", "s1", 1))
        assert refused.value.transient and refused.value.reason == "Unauthorized"
    finally:
        await d.close()
