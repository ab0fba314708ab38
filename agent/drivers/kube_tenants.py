"""What the kube driver does to running tenant clusters besides applying their objects.

- **status**: every tenant's readiness, version and pod count (``tenant_status`` decides what they mean);
  a tenant's own API is asked ``/readyz`` through the kubeconfig vCluster writes into Secret ``vc-vcluster``
  of its namespace (tests put a kubeconfig of a second real API server there: the same seam);
- **members**: once a tenant answers, its members' ClusterRoleBindings are applied *inside* it, through its
  API (``tether:user:<n>`` / ``tether:team:<t>``; admin is cluster-admin, view is view), and bindings of
  members no longer listed are removed;
- **sleep**: after the control plane is scaled to zero, the pods vCluster synced into the namespace are
  deleted (as ``vcluster pause`` does); the namespace records what ran (``tether.dev/restore``). On wake the
  control plane comes back and its syncer recreates them from the tenant's own state.

No ``kubernetes`` import here: the host's API and a factory for a tenant's API are handed in. The tenant's
kubeconfig Secret is written by a control plane the tenant drives: it is read with the gateway's hostile-kubeconfig
checks (``agent.gateway_tenant.parse_kubeconfig``: inline data only, no exec or file paths, only the tenant's own
Service), and the factory gets only what passed them, never the tenant's file.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import yaml

from agent.drivers import vcluster
from agent.drivers.kube_objects import (
    ANN_OP_ID,
    DOMAIN,
    LABEL_KIND,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    MANAGED_SELECTOR,
    annotations_of,
    decode_spec,
    generation_of,
    is_terminating,
    namespace_name,
    owner_of,
    state_of,
)
from agent.drivers.tenant_status import (
    TenantStatus,
    control_plane_state,
    pod_problem,
    pod_ready,
    running_version,
    tenant_member_bindings,
)
from agent.errors import DriverError
from agent.gateway_tenant import KUBECONFIG_LIMIT, parse_kubeconfig
from agent.gateway_upstream import Upstream
from schemas.messages import DesiredState, WorkloadSpec

logger = logging.getLogger(__name__)

Obj = dict[str, Any]

ANN_RESTORE = f"{DOMAIN}/restore"
"""On a sleeping tenant's namespace: what ran when it went to sleep (JSON), so wake can be checked against it."""


class Api(Protocol):
    """What is used of ``agent.drivers.kube.KubeApi``."""

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    def list(self, kind: str, namespace: str | None = None, *, selector: str = "") -> list[Obj]: ...

    def apply(self, obj: Mapping[str, Any]) -> Obj: ...

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool: ...

    def patch_merge(self, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None) -> Obj: ...

    def get_text(self, path: str, *, what: str = "") -> str: ...

    def close(self) -> None: ...


Connect = Callable[[Upstream], Api]
"""Makes a client of a tenant's API from its checked endpoint and inline credentials."""


def _members_digest(spec: WorkloadSpec) -> str:
    text = json.dumps(sorted((m.subject, m.access) for m in spec.members))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class TenantRuntime:
    """Status, members inside tenants, sleep and wake of workloads; synchronous (runs in worker threads)."""

    def __init__(self, api: Api, connect: Connect, host_url: str, environ: Mapping[str, str]) -> None:
        self.api = api
        self.connect = connect
        self._host_url = host_url
        """The host cluster's API server: a tenant's kubeconfig naming it is refused."""
        self._environ = dict(environ)
        """Where ``TETHER_GATEWAY_TENANT_HOSTS`` (hosts allowed besides the tenant's own Service) is read."""
        self._answered: dict[str, tuple[int, str]] = {}
        """Namespace -> (generation, pod uid) whose API answered and got its members: not asked again."""
        self._refused: dict[str, str] = {}
        """Namespace -> why its kubeconfig was refused, last time (logged once per new reason, not per status)."""

    # --- status ---------------------------------------------------------------------------------
    def statuses(self) -> list[TenantStatus]:
        """Every tenant on the cluster now (terminating ones too, as deleted and not settled)."""
        selector = f"{MANAGED_SELECTOR},{LABEL_KIND}=tenant"
        namespaces = self.api.list("Namespace", selector=selector)
        pods: dict[str, list[Obj]] = {}
        for pod in self.api.list("Pod", selector="app=vcluster") + self.api.list("Pod", selector=vcluster.MANAGED_BY):
            pods.setdefault(str(pod["metadata"].get("namespace") or ""), []).append(pod)
        sets = {
            str(s["metadata"].get("namespace") or ""): s
            for s in self.api.list("StatefulSet", selector=selector)
            if s["metadata"].get("name") == vcluster.NAME
        }
        out = []
        for ns in namespaces:
            owner = owner_of(ns)
            name = ns["metadata"]["name"]
            if owner is None or owner.kind != "tenant" or name != namespace_name("tenant", owner.project, owner.name):
                continue
            out.append(self._status(ns, owner.project, owner.name, pods.get(name, []), sets.get(name)))
        live = {namespace_name("tenant", s.project, s.name) for s in out}
        for gone in self._answered.keys() - live:
            del self._answered[gone]
        for gone in self._refused.keys() - live:
            del self._refused[gone]
        return out

    def _status(self, ns: Obj, project: str, name: str, pods: list[Obj], sts: Obj | None) -> TenantStatus:
        control, count = control_plane_state({p["metadata"]["name"]: p for p in pods}.values())
        namespace = ns["metadata"]["name"]

        def status(
            state: DesiredState, settled: bool, reason: str = "", message: str = "", version: str = ""
        ) -> TenantStatus:
            return TenantStatus(
                kind="tenant",
                project=project,
                name=name,
                op_id=annotations_of(ns).get(ANN_OP_ID, ""),
                generation=generation_of(ns),
                state=state,
                settled=settled,
                reason=reason,
                message=message,
                version=version,
                pods=count,
                replicas=int(((sts or {}).get("spec") or {}).get("replicas") or 0),
                ready_replicas=int(((sts or {}).get("status") or {}).get("readyReplicas") or 0),
            )

        if is_terminating(ns):
            return status(
                "deleted", False, "Terminating", f"namespace {namespace} is being deleted ({count} pods left)"
            )
        state = state_of(ns)
        if state == "sleeping":
            return (
                status(state, True) if not count else status(state, False, "Stopping", f"{count} pods still stopping")
            )
        if control is None:
            return status(state, False, "ControlPlanePending", "no control plane pod yet")
        if not pod_ready(control):
            return status(state, False, *pod_problem(control))
        problem = self._answers(ns, dict(control))
        if problem:
            return status(state, False, *problem)
        return status(state, True, version=running_version(control))

    def _answers(self, ns: Obj, pod: Obj) -> tuple[str, str] | None:
        """None when the tenant's API answers ``/readyz`` and has its members; else (reason, message)."""
        namespace = ns["metadata"]["name"]
        mark = (generation_of(ns), str(pod["metadata"].get("uid") or ""))
        if self._answered.get(namespace) == mark:
            return None
        try:
            tenant = self._tenant_api(namespace)
        except DriverError as exc:
            return exc.reason or "KubeconfigMissing", str(exc)[:500]
        try:
            answer = tenant.get_text("/readyz", what="asking the tenant's API /readyz")
            if answer.strip() != "ok":
                return "TenantAPINotReady", f"/readyz answered {answer.strip()[:200]!r}"
            spec = decode_spec(annotations_of(ns).get(f"{DOMAIN}/spec", ""))
            if spec is not None:
                self._apply_members(tenant, spec)
        except DriverError as exc:
            return "TenantAPINotReady", f"the tenant's API: {exc}"[:500]
        finally:
            tenant.close()
        self._answered[namespace] = mark
        return None

    def _tenant_api(self, namespace: str) -> Api:
        secret = self.api.get("Secret", vcluster.KUBECONFIG_SECRET, namespace)
        raw = ((secret or {}).get("data") or {}).get(vcluster.KUBECONFIG_KEY)
        if not raw:
            raise DriverError(
                f"the tenant has not written its kubeconfig (Secret {namespace}/{vcluster.KUBECONFIG_SECRET}) yet",
                reason="KubeconfigMissing",
            )
        try:
            if not isinstance(raw, str) or len(raw) > 2 * KUBECONFIG_LIMIT:
                raise ValueError(f"larger than {KUBECONFIG_LIMIT} bytes")
            upstream = parse_kubeconfig(base64.b64decode(raw, validate=True), namespace, self._host_url, self._environ)
        except (ValueError, binascii.Error, yaml.YAMLError) as exc:
            why = f"Secret {namespace}/{vcluster.KUBECONFIG_SECRET} holds no usable kubeconfig: {exc}"[:500]
            if self._refused.get(namespace) != why:
                logger.warning("refused a tenant's kubeconfig: %s", why)
            self._refused[namespace] = why
            raise DriverError(why, reason="KubeconfigInvalid") from None
        self._refused.pop(namespace, None)
        return self.connect(upstream)

    @staticmethod
    def _apply_members(tenant: Api, spec: WorkloadSpec) -> None:
        labels = {LABEL_MANAGED_BY: MANAGED_BY, f"{DOMAIN}/members": _members_digest(spec)}
        wanted = tenant_member_bindings(spec.members, labels)
        for binding in wanted:
            tenant.apply(binding)
        names = {b["metadata"]["name"] for b in wanted}
        for old in tenant.list("ClusterRoleBinding", selector=MANAGED_SELECTOR):
            if old["metadata"]["name"] not in names:
                tenant.delete("ClusterRoleBinding", old["metadata"]["name"])

    def forget(self, namespace: str) -> None:
        """Ask the tenant again at the next status (its members or pod changed)."""
        self._answered.pop(namespace, None)

    # --- sleep and wake -----------------------------------------------------------------------------
    def quiesce(self, namespace: str) -> None:
        """Delete what vCluster synced into the namespace (its syncer is stopped); record how many there were."""
        synced = self.api.list("Pod", namespace, selector=f"{vcluster.MANAGED_BY}={vcluster.NAME}")
        if synced:
            record = json.dumps(
                {"syncedPods": sorted(p["metadata"]["name"] for p in synced)[:100], "count": len(synced)}
            )
            self.api.patch_merge("Namespace", namespace, {"metadata": {"annotations": {ANN_RESTORE: record}}})
        for pod in synced:
            self.api.delete("Pod", pod["metadata"]["name"], namespace)
        self.forget(namespace)

    def restored(self, namespace: str) -> None:
        """Awake again: the record of what slept is spent (the syncer recreates the pods)."""
        ns = self.api.get("Namespace", namespace)
        if ns is not None and ANN_RESTORE in annotations_of(ns):
            self.api.patch_merge("Namespace", namespace, {"metadata": {"annotations": {ANN_RESTORE: None}}})
        self.forget(namespace)
