"""A tenant's vCluster objects and its status, without an API server: what the driver will send, and what
it makes of pods it reads."""

from __future__ import annotations

import base64
from typing import Any

import yaml

from agent.drivers import vcluster
from agent.drivers.kube_objects import Stamp, TenantSettings, desired_objects
from agent.drivers.tenant_status import pod_problem, pod_ready, running_version, tenant_member_bindings
from agent.drivers.vcluster import VClusterSettings
from schemas.messages import Member, Resources, WorkloadSpec
from services.api import manifests

GiB = 2**30


def tenant(**kw: Any) -> WorkloadSpec:
    base: dict[str, Any] = {
        "kind": "tenant",
        "project": "p",
        "name": "t1",
        "cluster": "c",
        "version": "v1.35",
        "resources": Resources(cpu=2, memory=4 * GiB),
    }
    return WorkloadSpec(**{**base, **kw})


def objects(spec: WorkloadSpec, settings: TenantSettings | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    objs = desired_objects(Stamp(spec=spec, generation=3, op_id="op"), settings or TenantSettings())
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


def config_of(objs: dict[tuple[str, str], dict[str, Any]]) -> dict[str, Any]:
    secret = objs[("Secret", "vc-config-vcluster")]
    data: dict[str, Any] = yaml.safe_load(base64.b64decode(secret["data"]["config.yaml"]))
    return data


def test_a_tenant_is_a_vcluster_of_the_pinned_version() -> None:
    objs = objects(tenant())
    assert set(objs) == {
        ("Namespace", "tether-t-p-t1"),
        ("ServiceAccount", "vc-vcluster"),
        ("RoleBinding", "vc-vcluster"),
        ("Secret", "vc-config-vcluster"),
        ("Service", "vcluster"),
        ("Service", "vcluster-headless"),
        ("StatefulSet", "vcluster"),
        ("ResourceQuota", "tether-quota"),
        ("LimitRange", "tether-limits"),
        ("NetworkPolicy", "tether-isolation"),
    }
    sts = objs[("StatefulSet", "vcluster")]
    pod = sts["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "ghcr.io/loft-sh/vcluster-oss:0.36.1"
    assert pod["initContainers"][0]["image"] == "ghcr.io/loft-sh/kubernetes:v1.35.0"
    assert pod["serviceAccountName"] == "vc-vcluster"
    assert {"name": "vcluster-config", "secret": {"secretName": "vc-config-vcluster"}} in pod["volumes"]
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert sts["spec"]["serviceName"] == "vcluster-headless" and sts["spec"]["replicas"] == 1
    assert objs[("Service", "vcluster")]["spec"]["ports"][0] == {
        "name": "https",
        "port": 443,
        "targetPort": 8443,
        "protocol": "TCP",
    }
    binding = objs[("RoleBinding", "vc-vcluster")]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "tether-tenant-syncer",
    }


def test_the_vcluster_yaml_is_the_chart_defaults_with_the_tenants_settings() -> None:
    config = config_of(objects(tenant()))
    assert config["telemetry"] == {"enabled": False}
    assert config["controlPlane"]["distro"]["k8s"]["enabled"] is True
    assert config["controlPlane"]["distro"]["k8s"]["image"]["tag"] == "v1.35.0"
    assert config["controlPlane"]["statefulSet"]["image"] == {
        "registry": "ghcr.io",
        "repository": "loft-sh/vcluster-oss",
        "tag": "0.36.1",
    }
    assert config["controlPlane"]["statefulSet"]["persistence"]["volumeClaim"]["enabled"] is True
    assert config["exportKubeConfig"]["server"] == "https://vcluster.tether-t-p-t1.svc:443"
    assert config["sync"]["toHost"]["pods"]["enabled"] is True
    assert config["sync"]["fromHost"]["nodes"]["enabled"] is False
    assert config["rbac"]["clusterRole"]["enabled"] is False
    # Everything else is the chart's default (the binary fills in nothing itself).
    defaults = vcluster.chart_defaults()
    assert set(config) == set(defaults)
    assert config["networking"] == defaults["networking"]
    assert config["controlPlane"]["statefulSet"]["probes"] == defaults["controlPlane"]["statefulSet"]["probes"]


def test_images_and_volume_are_configurable() -> None:
    settings = TenantSettings(
        vcluster=VClusterSettings(registry="mirror.local", storage="10Gi", storage_class="fast"),
        agent_namespace="agents",
    )
    objs = objects(tenant(), settings)
    pod = objs[("StatefulSet", "vcluster")]["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == "mirror.local/loft-sh/vcluster-oss:0.36.1"
    assert pod["initContainers"][0]["image"] == "mirror.local/loft-sh/kubernetes:v1.35.0"
    claim = objs[("StatefulSet", "vcluster")]["spec"]["volumeClaimTemplates"][0]["spec"]
    assert claim["storageClassName"] == "fast" and claim["resources"]["requests"]["storage"] == "10Gi"
    policy = objs[("NetworkPolicy", "tether-isolation")]["spec"]["ingress"]
    assert policy[1]["from"][0]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "agents"}
    assert policy[1]["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_sleep_scales_the_control_plane_to_zero_and_a_new_config_rolls_the_pod() -> None:
    running, asleep = objects(tenant()), objects(tenant(state="sleeping"))
    assert asleep[("StatefulSet", "vcluster")]["spec"]["replicas"] == 0
    hash_of = lambda o: o[("StatefulSet", "vcluster")]["spec"]["template"]["metadata"]["annotations"]  # noqa: E731
    upgraded = objects(tenant(version="v1.36"))
    assert hash_of(running) != hash_of(upgraded)
    assert (
        upgraded[("StatefulSet", "vcluster")]["spec"]["volumeClaimTemplates"]
        == (running[("StatefulSet", "vcluster")]["spec"]["volumeClaimTemplates"])
    ), "the same claim: an upgrade keeps the data"


def test_control_plane_resources_leave_room_for_the_workloads() -> None:
    resources = vcluster.control_plane_resources(tenant())
    assert resources == {"requests": {"cpu": "200m", "memory": "256Mi"}, "limits": {"memory": "2Gi"}}
    small = vcluster.control_plane_resources(tenant(resources=Resources(cpu=0.1, memory=256 * 2**20)))
    assert small == {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "128Mi"}}


def test_the_installed_syncer_role_is_the_drivers() -> None:
    assert list(manifests.SYNCER_RULES) == list(vcluster.SYNCER_RULES)
    assert manifests.SYNCER_CLUSTER_ROLE == vcluster.SYNCER_CLUSTER_ROLE
    assert manifests.TENANT_CONFIG_SECRET == vcluster.CONFIG_SECRET
    assert manifests.TENANT_KUBECONFIG_SECRET == vcluster.KUBECONFIG_SECRET


def pod(**status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "vcluster-0"},
        "spec": {"initContainers": [{"name": "kubernetes", "image": "ghcr.io/loft-sh/kubernetes:v1.35.0"}]},
        "status": status,
    }


def test_why_a_pod_is_not_ready() -> None:
    unschedulable = pod(
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/2 nodes"}],
    )
    assert not pod_ready(unschedulable)
    assert pod_problem(unschedulable) == ("Unschedulable", "0/2 nodes")
    pulling = pod(
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "True"}],
        containerStatuses=[{"name": "syncer", "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no"}}}],
    )
    assert pod_problem(pulling) == ("ImagePullBackOff", "no")
    crashed = pod(containerStatuses=[{"name": "syncer", "state": {"terminated": {"exitCode": 1}}}])
    assert pod_problem(crashed) == ("Error", "container syncer exited 1")
    ready = pod(phase="Running", conditions=[{"type": "Ready", "status": "True"}])
    assert pod_ready(ready) and running_version(ready) == "v1.35.0"
    assert pod_problem(pod(phase="Running", conditions="junk"))[0] == "ContainersNotReady"  # hostile status: no crash
    assert (
        len(pod_problem(pod(containerStatuses=[{"state": {"waiting": {"reason": "X", "message": "m" * 9999}}}]))[1])
        == 500
    )


def test_members_inside_a_tenant_are_cluster_role_bindings() -> None:
    members = (
        Member(subject="user:alice", access="view"),
        Member(subject="user:alice", access="admin"),
        Member(subject="team:devs", access="view"),
    )
    bindings = {b["metadata"]["name"]: b for b in tenant_member_bindings(members, {"x": "y"})}
    assert set(bindings) == {"tether-user-alice-admin", "tether-team-devs-view"}
    assert bindings["tether-user-alice-admin"]["roleRef"]["name"] == "cluster-admin"
    assert bindings["tether-team-devs-view"]["roleRef"]["name"] == "view"
    assert bindings["tether-team-devs-view"]["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "tether:team:devs"}
    ]
