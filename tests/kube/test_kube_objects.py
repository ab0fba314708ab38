"""The kube driver's pure part: names, quantities, the objects of a workload, drift. No API server needed."""

from __future__ import annotations

import pytest

from agent.drivers.kube_objects import (
    SpecError,
    Stamp,
    TenantSettings,
    contains,
    cpu_quantity,
    desired_objects,
    drift,
    memory_quantity,
    namespace_name,
    object_key,
    parse_quantity,
    tenant_image,
)
from agent.drivers.vcluster import VClusterSettings
from schemas.messages import Member, Quota, Resources, WorkloadSpec
from schemas.names import dns1123_label_error


def spec(kind: str = "space", members: tuple[Member, ...] = (), **kw: object) -> WorkloadSpec:
    return WorkloadSpec(kind=kind, project="p", name="n", cluster="c", members=members, **kw)  # type: ignore[arg-type]


def test_namespace_names_are_dns_labels_even_when_long() -> None:
    assert namespace_name("space", "demo", "s1") == "tether-demo-s1"
    assert namespace_name("tenant", "demo", "t1") == "tether-t-demo-t1"
    long = namespace_name("tenant", "p" * 63, "n" * 63)
    assert len(long) <= 63 and dns1123_label_error(long) is None
    assert long != namespace_name("tenant", "p" * 63, "n" * 62), "the hash keeps long names apart"
    assert long == namespace_name("tenant", "p" * 63, "n" * 63), "and the name is stable"


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", 0.5), ("2", 2.0), ("2Gi", 2 * 2**30), ("1536Mi", 1536 * 2**20), ("1e3", 1000.0), ("1k", 1000.0)],
)
def test_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == value


def test_quantities_are_written_canonically() -> None:
    assert [cpu_quantity(c) for c in (1, 0.5, 2.25, 0.0001)] == ["1", "500m", "2250m", "1m"]
    assert [memory_quantity(m) for m in (2**31, 1536 * 2**20, 1000)] == ["2Gi", "1536Mi", "1000"]
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity("lots")


def test_tenant_image_follows_the_version() -> None:
    settings = TenantSettings()
    assert tenant_image(settings, "v1.35") == "ghcr.io/loft-sh/kubernetes:v1.35.0"
    assert tenant_image(settings, "v1.33") == "ghcr.io/loft-sh/kubernetes:v1.33.4", "vCluster 0.36.1's own tag"
    assert tenant_image(settings, "1.36.2") == "ghcr.io/loft-sh/kubernetes:v1.36.2"
    mirror = TenantSettings(vcluster=VClusterSettings(registry="registry.local:5000"))
    assert tenant_image(mirror, "v1.36") == "registry.local:5000/loft-sh/kubernetes:v1.36.0"
    with pytest.raises(SpecError, match="invalid tenant version"):
        tenant_image(settings, "latest")
    with pytest.raises(SpecError, match=r"has no Kubernetes v1\.29"):
        tenant_image(settings, "v1.29")


def test_space_members_become_role_bindings_and_tenant_members_do_not() -> None:
    members = (
        Member(subject="user:alice", access="view"),
        Member(subject="user:alice", access="admin"),
        Member(subject="team:devs", access="edit"),
    )
    space = desired_objects(Stamp(spec=spec("space", members), generation=1, op_id="o"), TenantSettings())
    bindings = {o["metadata"]["name"]: o for o in space if o["kind"] == "RoleBinding"}
    assert set(bindings) == {"tether-user-alice-admin", "tether-team-devs-edit"}, "the highest access wins"
    assert bindings["tether-team-devs-edit"]["subjects"][0]["name"] == "tether:team:devs"
    assert not [o for o in space if o["kind"] in ("StatefulSet", "Role", "ServiceAccount")]

    tenant = desired_objects(
        Stamp(spec=spec("tenant", members, version="v1.35"), generation=1, op_id="o"), TenantSettings()
    )
    subjects = [s for o in tenant if o["kind"] == "RoleBinding" for s in o["subjects"]]
    assert subjects == [{"kind": "ServiceAccount", "name": "vc-vcluster", "namespace": "tether-t-p-n"}]
    assert not [o for o in tenant if o["kind"] in ("Role", "ClusterRole", "ClusterRoleBinding")]
    for obj in tenant:
        assert obj["metadata"]["labels"]["tether.dev/managed-by"] == "tether"
        assert obj["metadata"].get("namespace", "tether-t-p-n") == "tether-t-p-n"


def test_bad_members_are_refused() -> None:
    for subject in ("alice", "group:x", "user:Alice", "user:"):
        with pytest.raises(SpecError, match="invalid member subject"):
            desired_objects(
                Stamp(spec=spec(members=(Member(subject=subject, access="view"),)), generation=1, op_id="o"),
                TenantSettings(),
            )


def test_quota_from_resources_else_the_project() -> None:
    def hard(s: WorkloadSpec) -> dict[str, str] | None:
        objs = desired_objects(Stamp(spec=s, generation=1, op_id="o"), TenantSettings())
        quota = [o for o in objs if o["kind"] == "ResourceQuota"]
        return quota[0]["spec"]["hard"] if quota else None

    assert hard(spec(resources=Resources(cpu=0.5, memory=2**30)))["limits.memory"] == "1Gi"  # type: ignore[index]
    assert hard(spec(quota=Quota(cpu=4)))["requests.cpu"] == "4"  # type: ignore[index]
    assert hard(spec()) is None
    assert hard(spec(state="sleeping")) == {"pods": "0"}


def test_drift_sees_missing_changed_and_extra_objects() -> None:
    expected = desired_objects(Stamp(spec=spec(), generation=1, op_id="o"), TenantSettings())
    found = {object_key(o): o for o in expected}
    assert drift(expected, found) == []
    policy = next(o for o in expected if o["kind"] == "NetworkPolicy")
    changed = {**found, object_key(policy): {**policy, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}}
    assert drift(expected, changed) == ["NetworkPolicy tether-p-n/tether-isolation was changed"]
    missing = {k: v for k, v in found.items() if k != object_key(policy)}
    assert drift(expected, missing) == ["NetworkPolicy tether-p-n/tether-isolation is missing"]
    extra = {**found, ("RoleBinding", "tether-p-n", "x"): {}}
    assert drift(expected, extra) == ["RoleBinding tether-p-n/x is not expected"]


def test_contains_allows_server_defaults_and_equal_quantities() -> None:
    assert contains({"a": 1, "b": {"c": "2048Mi", "d": "x"}}, {"b": {"c": "2Gi"}})
    assert not contains({"a": [1, 2]}, {"a": [1]})
    assert not contains({"a": "1"}, {"a": "2"})
