"""Inventory for the kube driver: every tenant cluster and space Tether owns on the cluster.

It lists the owned namespaces and every owned object in one list per kind,
rebuilds what each workload should have from the spec kept on its namespace,
and reports generation 0 for a workload that drifted, so the platform's resync
sends it again. A namespace on its way out is reported ``deleted`` at its
delete's generation until it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from agent.drivers import vcluster
from agent.drivers.kube_api import KubeApi
from agent.drivers.kube_objects import (
    ANN_ACTIVE_AT,
    ANN_OP_ID,
    ANN_SLEPT_AT,
    ANN_SPEC,
    ANN_VERSION,
    MANAGED_SELECTOR,
    TENANT_KINDS,
    Obj,
    ObjectKey,
    SpecError,
    Stamp,
    TenantSettings,
    annotations_of,
    decode_spec,
    desired_objects,
    drift,
    float_annotation,
    generation_of,
    is_terminating,
    namespace_name,
    object_key,
    owner_of,
    state_of,
)
from schemas.messages import InventoryItem, WorkloadRef, WorkloadSpec, ref_of

logger = logging.getLogger(__name__)

Owner = WorkloadRef


def _order(item: InventoryItem) -> tuple[str, str, str]:
    return item.kind, item.project, item.name


class KubeInventory:
    """Reads the inventory through ``api`` (synchronous: the driver calls it in a worker thread)."""

    def __init__(self, api: KubeApi, tenants: TenantSettings) -> None:
        self.api = api
        self.tenants = tenants

    def items(self) -> tuple[InventoryItem, ...]:
        workloads, leaving = self._namespaces()
        if not workloads:
            return tuple(sorted(leaving, key=_order))
        children = self._children(workloads)
        items = [self._item(owner, ns, children[name]) for name, (owner, ns) in sorted(workloads.items())]
        return tuple(sorted(items + leaving, key=_order))

    def _namespaces(self) -> tuple[dict[str, tuple[Owner, Obj]], list[InventoryItem]]:
        """The owned namespaces by name, and the workloads on their way out."""
        workloads: dict[str, tuple[Owner, Obj]] = {}
        leaving: list[InventoryItem] = []
        for ns in self.api.list("Namespace", selector=MANAGED_SELECTOR):
            owner = owner_of(ns)
            name = ns["metadata"]["name"]
            # Only a namespace that is where its owner's objects would be (a label copied elsewhere is not ours).
            if owner is None or name != namespace_name(owner.kind, owner.project, owner.name):
                continue
            if is_terminating(ns):
                leaving.append(
                    InventoryItem(
                        kind=owner.kind,
                        project=owner.project,
                        name=owner.name,
                        generation=generation_of(ns),
                        state="deleted",
                        version=annotations_of(ns).get(ANN_VERSION, ""),
                    )
                )
                continue
            workloads[name] = (owner, {**ns, "kind": "Namespace"})
        return workloads, leaving

    def _children(self, workloads: Mapping[str, tuple[Owner, Obj]]) -> dict[str, dict[ObjectKey, Obj]]:
        """Every owned object of each workload, listed once per kind; a tenant's config Secret read by name
        (the agent may not list anyone else's Secrets)."""
        children: dict[str, dict[ObjectKey, Obj]] = {name: {} for name in workloads}
        for kind in TENANT_KINDS:
            if kind == "Secret":
                continue
            for obj in self.api.list(kind, selector=MANAGED_SELECTOR):
                key = object_key(obj)
                if key.namespace in workloads and owner_of(obj) == workloads[key.namespace][0]:
                    children[key.namespace][key] = obj
        for name, (owner, _ns) in workloads.items():
            if owner.kind != "tenant":
                continue
            secret = self.api.get("Secret", vcluster.CONFIG_SECRET, name)
            if secret is not None and owner_of(secret) == owner:
                secret["kind"] = "Secret"
                children[name][object_key(secret)] = secret
        return children

    def _item(self, owner: Owner, ns: Obj, children: dict[ObjectKey, Obj]) -> InventoryItem:
        generation = generation_of(ns)
        problems = self._drift_of(ns, {**children, object_key(ns): ns})
        if problems:
            logger.warning(
                "%s drifted (%s); reporting generation 0 so that it is applied again", owner, "; ".join(problems)
            )
            generation = 0
        state = state_of(ns)
        return InventoryItem(
            kind=owner.kind,
            project=owner.project,
            name=owner.name,
            generation=generation,
            state=state if state != "deleted" else "running",
            version=annotations_of(ns).get(ANN_VERSION, ""),
            last_activity=float_annotation(ns, ANN_ACTIVE_AT),
        )

    def _drift_of(self, ns: Obj, found: Mapping[ObjectKey, Obj]) -> list[str]:
        """What differs between the workload's objects and what its namespace says they should be."""
        annotations = annotations_of(ns)
        spec: WorkloadSpec | None = decode_spec(annotations.get(ANN_SPEC, ""))
        owner = owner_of(ns)
        if spec is None or owner is None or ref_of(spec) != owner:
            return ["its namespace has no readable spec"]
        stamp = Stamp(
            spec=spec,
            generation=generation_of(ns),
            op_id=annotations.get(ANN_OP_ID, ""),
            slept_at=float_annotation(ns, ANN_SLEPT_AT),
            active_at=float_annotation(ns, ANN_ACTIVE_AT),
        )
        try:
            expected = desired_objects(stamp, self.tenants)
        except SpecError as exc:
            return [str(exc)]
        # The spec was read from the namespace itself (re-encoding it may spell numbers differently).
        expected[0]["metadata"]["annotations"][ANN_SPEC] = annotations[ANN_SPEC]
        return drift(expected, found)
