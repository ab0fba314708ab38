"""Apply for the kube driver: make one command's workload true on the cluster, idempotently.

The revision check reads the generation annotation of the workload's namespace (no namespace: generation
0). A newer generation is applied with server-side apply (namespace first) and what is no longer wanted is
pruned; the same generation again only puts back what drifted (a redelivery, a resync); an older one does
nothing. A namespace, or an object in it, with one of our names but not our owner label is never touched:
the command fails with reason ``Conflict``. A delete records its generation on the namespace, then deletes
it; while it terminates, a redelivered delete is a no-op and a new create waits (``NamespaceTerminating``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import msgspec

from agent.drivers import ApplyOutcome, vcluster
from agent.drivers.kube_api import KubeApi
from agent.drivers.kube_objects import (
    ANN_ACTIVE_AT,
    ANN_OP_ID,
    ANN_SLEPT_AT,
    ANN_SPEC,
    ANN_VERSION,
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
    is_owned,
    is_terminating,
    kinds_of,
    namespace_name,
    namespace_object,
    object_key,
    owner_of,
    state_of,
)
from agent.drivers.kube_tenants import TenantRuntime
from agent.errors import DriverError
from schemas.messages import Command, DesiredState, WorkloadKind, WorkloadSpec, ref_of

logger = logging.getLogger(__name__)


class KubeApplier:
    """Applies commands through ``api`` (synchronous: the driver calls it in a worker thread, one at a time)."""

    def __init__(
        self, api: KubeApi, tenants: TenantSettings, runtime: TenantRuntime, clock: Callable[[], float]
    ) -> None:
        self.api = api
        self.tenants = tenants
        self.runtime = runtime
        self._clock = clock

    def apply(self, command: Command) -> ApplyOutcome:
        spec = command.spec
        ns_name = namespace_name(spec.kind, spec.project, spec.name)
        ns = self.api.get("Namespace", ns_name)
        if ns is not None and owner_of(ns) != ref_of(spec):
            return self._not_ours(command, ns_name, ns)
        current = generation_of(ns)
        if spec.state == "deleted":
            return self._delete(command, ns_name, ns, current)
        if ns is not None and (done := self._already(command, ns_name, ns, current)) is not None:
            return done
        return self._make_true(command, ns_name, ns)

    @staticmethod
    def _not_ours(command: Command, ns_name: str, ns: Obj) -> ApplyOutcome:
        spec = command.spec
        if spec.state == "deleted":
            # Not ours: our object does not exist, which is what a delete wants.
            return ApplyOutcome(applied=True, state="deleted", generation=command.generation)
        holder = owner_of(ns)
        whose = str(holder) if holder else "nothing of Tether's (no owner label)"
        raise DriverError(
            f"namespace {ns_name} already exists and belongs to {whose}; "
            f"{spec.kind} {spec.project}/{spec.name} cannot use it and it is left alone",
            reason="Conflict",
        )

    def _already(self, command: Command, ns_name: str, ns: Obj, current: int) -> ApplyOutcome | None:
        """The outcome when the namespace is already at (or past) this generation, or on its way out."""
        spec = command.spec
        if is_terminating(ns):
            if current >= command.generation:
                return ApplyOutcome(applied=False, state="deleted", generation=current)
            raise DriverError(
                f"namespace {ns_name} of the deleted {spec.kind} {spec.project}/{spec.name} is still terminating; "
                "it is created again once it is gone",
                reason="NamespaceTerminating",
                transient=True,
            )
        if current > command.generation:
            return self._current(ns, current)
        if current < command.generation:
            return None
        # The same generation again (a redelivery or a resync): put back what drifted.
        stamp = Stamp(
            spec=decode_spec(annotations_of(ns).get(ANN_SPEC, "")) or spec,
            generation=current,
            op_id=annotations_of(ns).get(ANN_OP_ID, command.op_id),
            slept_at=float_annotation(ns, ANN_SLEPT_AT),
            active_at=float_annotation(ns, ANN_ACTIVE_AT),
        )
        self._converge(stamp, ns, repair=True)
        return self._current(ns, current)

    def _stamp(self, command: Command, ns: Obj | None, before: DesiredState | None) -> Stamp:
        """The new generation's stamp: becoming ``running`` is activity, falling asleep is remembered."""
        spec, now = command.spec, self._clock()
        slept_at, active_at = float_annotation(ns, ANN_SLEPT_AT), float_annotation(ns, ANN_ACTIVE_AT)
        if spec.state == "running":
            active_at = now if before != "running" or not active_at else active_at
            slept_at = 0.0
        elif before != "sleeping" or not slept_at:
            slept_at = now
        return Stamp(
            spec=spec, generation=command.generation, op_id=command.op_id, slept_at=slept_at, active_at=active_at
        )

    def _make_true(self, command: Command, ns_name: str, ns: Obj | None) -> ApplyOutcome:
        spec = command.spec
        before = state_of(ns) if ns is not None else None
        self._converge(self._stamp(command, ns, before), ns)
        if spec.kind == "tenant":
            self._tenant_changed(spec, before, ns_name)
        settled, reason, message = self._settled(spec.kind, ns_name)
        return ApplyOutcome(
            applied=True,
            state=spec.state,
            version=spec.version if spec.kind == "tenant" else "",
            generation=command.generation,
            settled=settled,
            reason=reason,
            message=message,
        )

    def _tenant_changed(self, spec: WorkloadSpec, before: DesiredState | None, ns_name: str) -> None:
        if spec.state == "sleeping":
            self.runtime.quiesce(ns_name)
        elif before == "sleeping":
            self.runtime.restored(ns_name)
        else:
            self.runtime.forget(ns_name)  # its members may have changed: apply them inside it again

    def _settled(self, kind: WorkloadKind, namespace: str) -> tuple[bool, str, str]:
        """Has a tenant got where it was sent (its control plane Ready, asleep with no pods)? Spaces always have."""
        if kind != "tenant":
            return True, "", ""
        for status in self.runtime.statuses():
            if namespace_name("tenant", status.project, status.name) == namespace:
                return status.settled, status.reason, status.message
        return False, "ControlPlanePending", "no control plane yet"

    def _current(self, ns: Obj, generation: int) -> ApplyOutcome:
        owner = owner_of(ns)
        settled, reason, message = self._settled(owner.kind if owner else "space", ns["metadata"]["name"])
        return ApplyOutcome(
            applied=False,
            state=state_of(ns),
            version=annotations_of(ns).get(ANN_VERSION, ""),
            generation=generation,
            settled=settled,
            reason=reason,
            message=message,
        )

    def _desired(self, stamp: Stamp) -> list[Obj]:
        try:
            return desired_objects(stamp, self.tenants)
        except SpecError as exc:
            raise DriverError(str(exc), reason="Invalid") from None

    def _children(self, workload: WorkloadKind, namespace: str) -> dict[ObjectKey, Obj]:
        """Every object of the kinds the agent owns in ``namespace``, owned or not, by key."""
        found: dict[ObjectKey, Obj] = {}
        for kind in kinds_of(workload):
            if kind == "Secret":
                # Read by name only: the agent may not list (or read) anyone else's Secrets.
                secret = self.api.get(kind, vcluster.CONFIG_SECRET, namespace)
                items = [secret] if secret else []
            else:
                items = self.api.list(kind, namespace)
            for item in items:
                item["kind"] = kind
                found[object_key(item)] = item
        return found

    def _converge(self, stamp: Stamp, ns: Obj | None, *, repair: bool = False) -> None:
        """Make the workload's objects exactly the desired ones: check, apply, prune.

        ``repair``: the generation is already on the cluster; only write when something drifted.
        """
        desired = self._desired(stamp)
        mine = self._mine(stamp, desired) if ns is not None else {}
        if repair and ns is not None and not self._drifted(stamp, ns, desired, mine):
            return
        for obj in desired:
            self.api.apply(obj)
        wanted = {object_key(o) for o in desired}
        for key in mine.keys() - wanted:
            logger.info("deleting %s: no longer wanted", key)
            self.api.delete(key.kind, key.name, key.namespace)

    def _mine(self, stamp: Stamp, desired: list[Obj]) -> dict[ObjectKey, Obj]:
        """The workload's own objects in its namespace; Conflict when a desired name is taken by another."""
        spec = stamp.spec
        existing = self._children(spec.kind, stamp.namespace)
        blocked = [
            str(key) for key in (object_key(o) for o in desired[1:]) if key in existing and not is_owned(existing[key])
        ]
        if blocked:
            raise DriverError(
                f"{', '.join(blocked)} already exist{'s' if len(blocked) == 1 else ''} without Tether's owner "
                f"label; {spec.kind} {spec.project}/{spec.name} is not changed and they are left alone",
                reason="Conflict",
            )
        owner = ref_of(spec)
        return {k: o for k, o in existing.items() if owner_of(o) == owner}

    @staticmethod
    def _drifted(stamp: Stamp, ns: Obj, desired: list[Obj], mine: dict[ObjectKey, Obj]) -> bool:
        found = {**mine, object_key({**ns, "kind": "Namespace"}): {**ns, "kind": "Namespace"}}
        desired[0]["metadata"]["annotations"][ANN_SPEC] = annotations_of(ns).get(ANN_SPEC, "")
        problems = drift(desired, found)
        if problems:
            logger.warning(
                "%s %s/%s at generation %d: putting back what drifted (%s)",
                stamp.spec.kind,
                stamp.spec.project,
                stamp.spec.name,
                stamp.generation,
                "; ".join(problems),
            )
        return bool(problems)

    def _delete(self, command: Command, ns_name: str, ns: Obj | None, current: int) -> ApplyOutcome:
        if ns is None:
            return ApplyOutcome(applied=True, state="deleted", generation=command.generation)
        if current >= command.generation:
            if is_terminating(ns):
                return ApplyOutcome(
                    applied=False,
                    state="deleted",
                    version=annotations_of(ns).get(ANN_VERSION, ""),
                    generation=current,
                    settled=False,
                    reason="Terminating",
                    message=f"namespace {ns_name} is being deleted",
                )
            return self._current(ns, current)
        spec = command.spec
        stored = decode_spec(annotations_of(ns).get(ANN_SPEC, "")) or spec
        stamp = Stamp(
            spec=msgspec.structs.replace(stored, state="deleted"),
            generation=command.generation,
            op_id=command.op_id,
        )
        # Record the delete's generation first: while the namespace terminates, a redelivery is a no-op.
        self.api.apply(namespace_object(stamp, state="deleted"))
        self.api.delete("Namespace", ns_name)
        gone = self.api.get("Namespace", ns_name) is None
        return ApplyOutcome(
            applied=True,
            state="deleted",
            generation=command.generation,
            # Deleting until the namespace is really gone; the agent reports again when it is.
            settled=gone,
            reason="" if gone else "Terminating",
            message="" if gone else f"namespace {ns_name} is being deleted",
        )

    # --- inventory ------------------------------------------------------------------------------------
