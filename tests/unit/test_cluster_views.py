"""How a cluster's health and history reach people: one copy of a control plane's record from the agent's status
to the API, and every cluster event kind the registry publishes (``removed`` too) in the API's history."""

from __future__ import annotations

from typing import get_args

from agent.drivers.kube_health import control_plane_of
from agent.drivers.kube_objects import ObjectKey, drift, object_key
from agent.drivers.tenant_status import TenantStatus
from schemas.api import ClusterEventOut, ControlPlaneOut
from schemas.messages import ClusterEvent, ClusterEventKind, ClusterHealth, ClusterRecord, ControlPlaneHealth, Presence
from services.api.logic import cluster_view
from services.api.web import cluster_history


def status(**overrides: object) -> TenantStatus:
    fields: dict[str, object] = {
        "kind": "tenant",
        "project": "eng",
        "name": "t1",
        "op_id": "op",
        "generation": 3,
        "state": "running",
        "settled": True,
        "version": "v1.35.0",
        "pods": 4,
        "replicas": 1,
        "ready_replicas": 1,
    }
    return TenantStatus(**{**fields, **overrides})  # type: ignore[arg-type]


def test_a_control_plane_reaches_the_api_with_every_field_the_agent_reported() -> None:
    ready = control_plane_of(status())
    waiting = control_plane_of(status(settled=False, reason="TenantAPINotReady", message="/readyz said no"))
    assert ready == ControlPlaneHealth(
        project="eng", name="t1", replicas=1, ready_replicas=1, ready=True, version="v1.35.0", pods=4
    )
    assert (waiting.ready, waiting.reason, waiting.message) == (False, "TenantAPINotReady", "/readyz said no")
    assert not control_plane_of(status(state="sleeping")).ready
    # The API's copy has exactly the wire record's fields, value for value.
    assert set(ControlPlaneOut.model_fields) == set(ControlPlaneHealth.__struct_fields__)
    assert ControlPlaneOut.of(waiting).model_dump() == {f: getattr(waiting, f) for f in ControlPlaneOut.model_fields}
    presence = Presence(cluster="c1", online=True, health=ClusterHealth(control_planes=(ready, waiting)))
    view = cluster_view(ClusterRecord(name="c1", state="connected"), presence)
    assert view.control_planes == [ControlPlaneOut.of(ready), ControlPlaneOut.of(waiting)]


def test_every_cluster_event_kind_is_in_the_history_a_removed_and_recreated_cluster_too() -> None:
    assert get_args(ClusterEventKind) == get_args(ClusterEventOut.model_fields["kind"].annotation)
    kinds = get_args(ClusterEventKind)
    events = [ClusterEvent(kind=kind, cluster="c1", at=1_700_000_000.0 + i) for i, kind in enumerate(kinds)]
    events += [ClusterEvent(kind="registered", cluster="c1", at=1_800_000_000.0)]
    items, truncated = cluster_history(events, "c1", 100)
    assert [i.kind for i in items] == ["registered", *reversed(kinds)]
    assert "removed" in [i.kind for i in items] and not truncated


def test_object_keys_name_their_parts_and_stay_plain_tuples() -> None:
    key = object_key({"kind": "Role", "metadata": {"namespace": "ns", "name": "r"}})
    assert key == ObjectKey("Role", "ns", "r") == ("Role", "ns", "r")
    assert (key.kind, key.namespace, key.name, str(key)) == ("Role", "ns", "r", "Role ns/r")
    role = {"kind": "Role", "metadata": {"namespace": "ns", "name": "r"}}
    assert drift([role], {}) and not drift([role], {key: role})
