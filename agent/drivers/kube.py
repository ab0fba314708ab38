"""The ``kube`` driver: a real cluster through the official ``kubernetes`` client.

This is the only module of Tether that imports ``kubernetes`` (import-linter
checks it). What exists on the cluster for each tenant cluster and space is
decided by the pure ``agent.drivers.kube_objects``; this module reads and
writes it:

- **apply**: every object is sent with server-side apply under one field
  manager (``tether-agent``, conflicts forced), namespace first. The revision
  check reads the generation annotation of the workload's namespace (no
  namespace: generation 0). An equal generation re-applies the same objects,
  which puts back anything deleted or changed by hand (that is how a resync
  repairs drift); an older one does nothing. Owned objects that are no longer
  wanted (a removed member's RoleBinding) are deleted. An object that has the
  name of one of ours but not the owner label is never touched: the command
  fails with reason ``Conflict`` and nothing is changed.
- **delete** records the generation on the namespace, then deletes it (and
  with it everything inside). While it terminates, a redelivered delete is a
  no-op and a new create waits (transient ``NamespaceTerminating``).
- **inventory** lists the owned namespaces and every owned object in one list
  per kind, rebuilds what each workload should have from the spec kept on its
  namespace, and reports generation 0 for a workload that drifted, so the
  platform's resync sends it again.
- **errors**: 403/409/422 (and other 4xx) become permanent ``DriverError``s with
  the API server's reason (``Forbidden``, ``Conflict``, ``Invalid``) and message;
  connection failures, 429 and 5xx are transient ``ClusterUnreachable``.

The client is synchronous; every call runs in a worker thread.

In a cluster the agent can keep its state directory's credentials in a Secret
(``$TETHER_AGENT_STATE_SECRET=<namespace>/<name>``): restored into the state
directory when the driver starts, written back when they change (see
``agent/deploy/README.md``).

Tenant clusters are vCluster instances (``agent.drivers.vcluster``); their readiness, members inside them,
sleep and wake of their workloads are ``agent.drivers.kube_tenants``.

Knobs (environment, read when the driver is made): ``TETHER_TENANT_REGISTRY`` (registry of the tenant
images, default ``ghcr.io``), ``TETHER_TENANT_IMAGE_REPOSITORY`` (default ``loft-sh/vcluster-oss``),
``TETHER_TENANT_KUBERNETES_REPOSITORY`` (default ``loft-sh/kubernetes``), ``TETHER_TENANT_STORAGE`` (size of
a control plane's volume, default ``5Gi``), ``TETHER_TENANT_STORAGE_CLASS``, ``TETHER_AGENT_NAMESPACE`` (the
agent's namespace, admitted to the tenants' APIs; default ``tether-agent``), ``TETHER_KUBE_TIMEOUT`` (seconds
per API request, default 30).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from agent import VERSION
from agent.drivers import ApplyOutcome, WorkloadStatus, vcluster
from agent.drivers.kube_objects import (
    ANN_ACTIVE_AT,
    ANN_OP_ID,
    ANN_SLEPT_AT,
    ANN_SPEC,
    ANN_VERSION,
    FIELD_MANAGER,
    MANAGED_SELECTOR,
    TENANT_KINDS,
    Obj,
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
    parse_quantity,
    state_of,
)
from agent.drivers.kube_tenants import TenantRuntime
from agent.drivers.tenant_status import TenantStatus
from agent.errors import ClusterUnreachable, DriverError
from agent.gateway_upstream import Upstream
from agent.identity.files import STATE_FILES
from agent.settings import AgentSettings
from agent.statefiles import write_bytes_atomic
from schemas.messages import (
    Capacity,
    ClusterHealth,
    Command,
    ControlPlaneHealth,
    InventoryItem,
    WorkloadKind,
    WorkloadSpec,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

STATE_SECRET_ENV = "TETHER_AGENT_STATE_SECRET"
DEFAULT_TIMEOUT = 30.0


# --- the REST layer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resource:
    """Where one kind lives in the API."""

    api_version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.api_version}" if "/" not in self.api_version else f"/apis/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


RESOURCES: dict[str, Resource] = {
    "Namespace": Resource("v1", "namespaces", namespaced=False),
    "Node": Resource("v1", "nodes", namespaced=False),
    "ServiceAccount": Resource("v1", "serviceaccounts"),
    "ConfigMap": Resource("v1", "configmaps"),
    "Secret": Resource("v1", "secrets"),
    "Service": Resource("v1", "services"),
    "ResourceQuota": Resource("v1", "resourcequotas"),
    "LimitRange": Resource("v1", "limitranges"),
    "Role": Resource("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": Resource("rbac.authorization.k8s.io/v1", "rolebindings"),
    "ClusterRole": Resource("rbac.authorization.k8s.io/v1", "clusterroles", namespaced=False),
    "ClusterRoleBinding": Resource("rbac.authorization.k8s.io/v1", "clusterrolebindings", namespaced=False),
    "StatefulSet": Resource("apps/v1", "statefulsets"),
    "Deployment": Resource("apps/v1", "deployments"),
    "ReplicaSet": Resource("apps/v1", "replicasets"),
    "Pod": Resource("v1", "pods"),
    "PersistentVolumeClaim": Resource("v1", "persistentvolumeclaims"),
    "PersistentVolume": Resource("v1", "persistentvolumes", namespaced=False),
    "StorageClass": Resource("storage.k8s.io/v1", "storageclasses", namespaced=False),
    "NetworkPolicy": Resource("networking.k8s.io/v1", "networkpolicies"),
    "SubjectAccessReview": Resource("authorization.k8s.io/v1", "subjectaccessreviews", namespaced=False),
    "ValidatingAdmissionPolicy": Resource(
        "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", namespaced=False
    ),
    "ValidatingAdmissionPolicyBinding": Resource(
        "admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", namespaced=False
    ),
}

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Gone",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
}


def _status_message(body: bytes) -> tuple[str, str, dict[str, Any]]:
    """(reason, message, details) of a Status answer; empty when the body is not one."""
    try:
        status = json.loads(body)
    except ValueError:
        return "", body.decode(errors="replace").strip()[:500], {}
    if not isinstance(status, dict):
        return "", "", {}
    return str(status.get("reason") or ""), str(status.get("message") or ""), dict(status.get("details") or {})


def load_configuration(kubeconfig: Path | None) -> k8s_client.Configuration:
    """``kubeconfig``, else ``$KUBECONFIG`` / ``~/.kube/config``, else the in-cluster configuration."""
    cfg = k8s_client.Configuration()
    try:
        if kubeconfig is not None:
            if not kubeconfig.exists():
                raise DriverError(f"kubeconfig {kubeconfig} does not exist", reason="NoKubeconfig")
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=str(kubeconfig), client_configuration=cfg, persist_config=False
            )
            return cfg
        env = os.environ.get("KUBECONFIG", "")
        default = Path.home() / ".kube" / "config"
        if any(Path(p).exists() for p in env.split(os.pathsep) if p) or (not env and default.exists()):
            k8s_config.load_kube_config(client_configuration=cfg, persist_config=False)  # type: ignore[no-untyped-call]
            return cfg
        k8s_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
        return cfg
    except ConfigException as exc:
        raise DriverError(
            f"no usable Kubernetes configuration (--kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster): {exc}",
            reason="NoKubeconfig",
        ) from None


class KubeApi:
    """A small, synchronous REST client over ``kubernetes.client.ApiClient``: JSON dicts in and out.

    Every failure is a DriverError: permanent for 4xx answers (reason from the
    status code, message from the API server), ``ClusterUnreachable`` when the
    server cannot be reached or answers 429/5xx.
    """

    def __init__(self, configuration: k8s_client.Configuration, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        configuration.retries = 1
        self.configuration = configuration
        self.host = str(configuration.host)
        self.timeout = timeout
        self._client = k8s_client.ApiClient(configuration)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: Path | None, *, timeout: float = DEFAULT_TIMEOUT) -> KubeApi:
        return cls(load_configuration(kubeconfig), timeout=timeout)

    @classmethod
    def from_kubeconfig_dict(cls, config: Mapping[str, Any], *, timeout: float = DEFAULT_TIMEOUT) -> KubeApi:
        """A client of the cluster a parsed kubeconfig names (a tenant's, read from its Secret)."""
        cfg = k8s_client.Configuration()
        try:
            k8s_config.load_kube_config_from_dict(  # type: ignore[no-untyped-call]
                dict(config), client_configuration=cfg, persist_config=False, temp_file_path=None
            )
        except (ConfigException, ValueError, TypeError, KeyError) as exc:
            raise DriverError(f"unusable kubeconfig: {exc}", reason="KubeconfigInvalid") from None
        return cls(cfg, timeout=timeout)

    def get_text(self, path: str, *, what: str = "") -> str:
        """A GET answered with text (``/readyz``, a pod's log)."""
        try:
            _, url, headers, _, _ = self._client.param_serialize(
                method="GET", resource_path=path, header_params={"Accept": "*/*"}, auth_settings=["BearerToken"]
            )
            response = self._client.call_api("GET", url, header_params=headers, _request_timeout=(5, self.timeout))
            status = int(response.status)
            data = response.read() or b""  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError, k8s_client.exceptions.ApiException) as exc:
            raise ClusterUnreachable(f"cannot reach the Kubernetes API server at {self.host}: {exc}") from None
        text = data[:65536].decode(errors="replace")
        if status >= 300:
            raise DriverError(
                f"{what or path}: the API server answered {status}: {text.strip()[:300]}", reason=f"HTTP{status}"
            )
        return text

    def close(self) -> None:
        self._client.close()  # type: ignore[no-untyped-call]

    # --- raw ----------------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: Iterable[tuple[str, str]] = (),
        content_type: str = "application/json",
        what: str = "",
        missing_ok: bool = False,
    ) -> Any:
        """One request; the decoded JSON answer (None for 404 when ``missing_ok``)."""
        headers = {"Accept": "application/json", "Content-Type": content_type}
        try:
            method, url, headers, body, post = self._client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
            )
            response = self._client.call_api(
                method, url, header_params=headers, body=body, post_params=post, _request_timeout=(5, self.timeout)
            )
            status = int(response.status)
            data = response.read() or b""  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError, k8s_client.exceptions.ApiException) as exc:
            raise ClusterUnreachable(f"cannot reach the Kubernetes API server at {self.host}: {exc}") from None
        if status < 300:
            try:
                return json.loads(data) if data else {}
            except ValueError:
                raise DriverError(
                    f"{what or path}: the API server answered {status} with something that is not JSON",
                    reason="BadResponse",
                ) from None
        if status == 404 and missing_ok:
            return None
        reason, message, details = _status_message(data)
        message = message or f"HTTP {status}"
        doing = f"{what}: " if what else f"{method} {path}: "
        if status == 401:
            # Credentials the server does not (or no longer) accept: nothing can be done until they are
            # fixed or refreshed, so the cluster counts as unreachable and commands wait.
            raise ClusterUnreachable(
                f"{doing}the API server refused the agent's credentials: {message}", reason="Unauthorized"
            )
        if status == 429 or status >= 500:
            raise ClusterUnreachable(
                f"{doing}the API server answered {status}: {message}", reason=reason or "ServerError"
            )
        causes = [c.get("reason") for c in details.get("causes") or [] if isinstance(c, dict)]
        if status == 403 and "NamespaceTerminating" in causes:
            raise DriverError(f"{doing}{message}", reason="NamespaceTerminating", transient=True)
        raise DriverError(f"{doing}{message}", reason=_REASONS.get(status) or reason or f"HTTP{status}")

    # --- objects ------------------------------------------------------------------------------------
    @staticmethod
    def resource(kind: str) -> Resource:
        try:
            return RESOURCES[kind]
        except KeyError:
            raise DriverError(f"the kube driver does not handle {kind} objects", reason="Invalid") from None

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        res = self.resource(kind)
        found = self.request(
            "GET", res.path(namespace, name), what=f"reading {kind} {_ref(namespace, name)}", missing_ok=True
        )
        return dict(found) if found is not None else None

    def list(self, kind: str, namespace: str | None = None, *, selector: str = "") -> list[Obj]:
        res = self.resource(kind)
        query = [("labelSelector", selector)] if selector else []
        items: list[Obj] = []
        token = ""
        while True:
            page = self.request(
                "GET",
                res.path(namespace),
                query=[*query, ("limit", "500"), *([("continue", token)] if token else [])],
                what=f"listing {res.plural}" + (f" in {namespace}" if namespace else ""),
            )
            for item in page.get("items") or []:
                item.setdefault("kind", kind)
                item.setdefault("apiVersion", res.api_version)
                items.append(item)
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return items

    def apply(self, obj: Mapping[str, Any], *, field_manager: str = FIELD_MANAGER) -> Obj:
        """Server-side apply of ``obj`` (conflicts forced); the object as stored."""
        kind, namespace, name = object_key(obj)
        res = self.resource(kind)
        return dict(
            self.request(
                "PATCH",
                res.path(namespace or None, name),
                body=dict(obj),
                query=[("fieldManager", field_manager), ("force", "true")],
                content_type="application/apply-patch+yaml",
                what=f"applying {kind} {_ref(namespace, name)}",
            )
        )

    def create(self, obj: Mapping[str, Any]) -> Obj:
        kind, namespace, name = object_key(obj)
        res = self.resource(kind)
        return dict(self.request("POST", res.path(namespace or None), body=dict(obj), what=f"creating {kind} {name}"))

    def patch_merge(self, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None) -> Obj:
        res = self.resource(kind)
        return dict(
            self.request(
                "PATCH",
                res.path(namespace, name),
                body=dict(patch),
                content_type="application/merge-patch+json",
                what=f"patching {kind} {_ref(namespace, name)}",
            )
        )

    def patch_status(self, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None) -> Obj:
        res = self.resource(kind)
        return dict(
            self.request(
                "PATCH",
                res.path(namespace, name) + "/status",
                body=dict(patch),
                content_type="application/merge-patch+json",
                what=f"patching the status of {kind} {_ref(namespace, name)}",
            )
        )

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete (in the background); False when it did not exist."""
        res = self.resource(kind)
        found = self.request(
            "DELETE",
            res.path(namespace, name),
            body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            what=f"deleting {kind} {_ref(namespace, name)}",
            missing_ok=True,
        )
        return found is not None


def _ref(namespace: str | None, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


# --- health figures -----------------------------------------------------------------------------------
def node_is_ready(node: Mapping[str, Any]) -> bool:
    for cond in (node.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return bool(cond.get("status") == "True")
    return False


def _quantity(value: Any) -> float:
    try:
        return parse_quantity(value) if value is not None else 0.0
    except ValueError:
        return 0.0


def health_from(nodes: Iterable[Mapping[str, Any]], version: str) -> ClusterHealth:
    """Nodes ready/total, allocatable CPU and memory of the ready ones, and the server's version."""
    nodes = list(nodes)
    ready = [n for n in nodes if node_is_ready(n)]
    cpu = sum(_quantity(((n.get("status") or {}).get("allocatable") or {}).get("cpu")) for n in ready)
    memory = sum(_quantity(((n.get("status") or {}).get("allocatable") or {}).get("memory")) for n in ready)
    return ClusterHealth(
        nodes_ready=len(ready),
        nodes_total=len(nodes),
        capacity=Capacity(cpu=round(cpu, 3), memory=int(memory)),
        kubernetes_version=version,
        agent_version=VERSION,
        driver="kube",
        api_reachable=True,
    )


@dataclass(frozen=True)
class ControlPlane:
    """Readiness of one tenant's control plane: its pod Ready and its API answering."""

    project: str
    name: str
    replicas: int
    ready_replicas: int
    ready: bool = False
    version: str = ""
    pods: int = 0
    reason: str = ""
    message: str = ""

    @classmethod
    def of(cls, status: TenantStatus) -> ControlPlane:
        return cls(
            project=status.project,
            name=status.name,
            replicas=status.replicas,
            ready_replicas=status.ready_replicas,
            ready=status.settled and status.state == "running",
            version=status.version,
            pods=status.pods,
            reason=status.reason,
            message=status.message,
        )


# --- the driver ---------------------------------------------------------------------------------------
def tenant_settings_from_env(environ: Mapping[str, str]) -> TenantSettings:
    images: dict[str, Any] = {}
    for key, env in (
        ("registry", "TETHER_TENANT_REGISTRY"),
        ("repository", "TETHER_TENANT_IMAGE_REPOSITORY"),
        ("kubernetes_repository", "TETHER_TENANT_KUBERNETES_REPOSITORY"),
        ("storage_class", "TETHER_TENANT_STORAGE_CLASS"),
    ):
        if value := environ.get(env, "").strip():
            images[key] = value
    if storage := environ.get("TETHER_TENANT_STORAGE", "").strip():
        try:
            parse_quantity(storage)
        except ValueError:
            raise DriverError(f"$TETHER_TENANT_STORAGE must be a quantity like 1Gi, not {storage!r}") from None
        images["storage"] = storage
    kwargs: dict[str, Any] = {"vcluster": vcluster.VClusterSettings(**images)}
    if agent_ns := environ.get("TETHER_AGENT_NAMESPACE", "").strip():
        kwargs["agent_namespace"] = agent_ns
    return TenantSettings(**kwargs)


class KubeDriver:
    """A real cluster, through its API server."""

    name = "kube"

    def __init__(
        self,
        settings: AgentSettings,
        *,
        api: KubeApi | None = None,
        tenants: TenantSettings | None = None,
        environ: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        env = os.environ if environ is None else environ
        self.settings = settings
        try:
            timeout = float(env.get("TETHER_KUBE_TIMEOUT", "").strip() or DEFAULT_TIMEOUT)
        except ValueError:
            raise DriverError("$TETHER_KUBE_TIMEOUT must be a number of seconds") from None
        self.api = api or KubeApi.from_kubeconfig(settings.kubeconfig, timeout=timeout)
        self.tenants = tenants or tenant_settings_from_env(env)
        self.runtime = TenantRuntime(self.api, lambda config: KubeApi.from_kubeconfig_dict(config, timeout=timeout))
        self._clock = clock
        self._lock = asyncio.Lock()
        self._uid = ""
        self._last_health = ClusterHealth(agent_version=VERSION, driver=self.name, api_reachable=False)
        self._closed = False
        self._state_secret = _parse_secret_ref(env.get(STATE_SECRET_ENV, ""))
        self._mirrored: dict[str, bytes] = {}
        self._mirror_lock = threading.Lock()
        self._mirror_failing = False
        if self._state_secret is not None:
            self._restore_state()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise DriverError("the kube driver was closed")
        return await asyncio.to_thread(fn, *args)

    # --- identity and health ----------------------------------------------------------------------
    async def cluster_uid(self) -> str:
        """The UID of the ``kube-system`` namespace: the same for every agent of one physical cluster."""
        if not self._uid:
            ns = await self._run(self.api.get, "Namespace", "kube-system")
            uid = str(((ns or {}).get("metadata") or {}).get("uid") or "")
            if not uid:
                raise DriverError("the cluster has no kube-system namespace to identify it", reason="NoClusterUID")
            self._uid = uid
        return self._uid

    def _health_sync(self) -> ClusterHealth:
        version = self.api.request("GET", "/version", what="reading the server version")
        nodes = self.api.list("Node")
        health = health_from(nodes, str((version or {}).get("gitVersion") or ""))
        planes = self._control_planes_sync()
        health = msgspec.structs.replace(
            health,
            control_planes=tuple(
                ControlPlaneHealth(
                    project=c.project,
                    name=c.name,
                    replicas=c.replicas,
                    ready_replicas=c.ready_replicas,
                    ready=c.ready,
                    version=c.version,
                    pods=c.pods,
                    reason=c.reason,
                    message=c.message,
                )
                for c in planes
            ),
        )
        self._mirror_state()
        return health

    async def health(self) -> ClusterHealth:
        """Health now; when the API server cannot be reached, the last figures with ``api_reachable`` False."""
        try:
            health = await self._run(self._health_sync)
        except ClusterUnreachable as exc:
            logger.debug("health: %s", exc)
            return msgspec.structs.replace(self._last_health, api_reachable=False)
        self._last_health = health
        return health

    async def control_planes(self) -> tuple[ControlPlane, ...]:
        """Readiness, version and pods of every tenant's control plane."""
        return await self._run(self._control_planes_sync)

    def _control_planes_sync(self) -> tuple[ControlPlane, ...]:
        planes = [ControlPlane.of(s) for s in self.runtime.statuses() if s.state != "deleted"]
        return tuple(sorted(planes, key=lambda c: (c.project, c.name)))

    async def statuses(self) -> tuple[WorkloadStatus, ...]:
        """Every tenant's status now (``StatusReporting``): the agent reports each change."""
        found = await self._run(self.runtime.statuses)
        return tuple(
            WorkloadStatus(
                kind=s.kind,
                project=s.project,
                name=s.name,
                op_id=s.op_id,
                generation=s.generation,
                state=s.state,
                settled=s.settled,
                reason=s.reason,
                message=s.message,
                version=s.version,
            )
            for s in found
        )

    # --- apply --------------------------------------------------------------------------------------
    async def apply(self, command: Command) -> ApplyOutcome:
        async with self._lock:
            return await self._run(self._apply_sync, command)

    def _apply_sync(self, command: Command) -> ApplyOutcome:
        spec = command.spec
        ns_name = namespace_name(spec.kind, spec.project, spec.name)
        ns = self.api.get("Namespace", ns_name)
        if ns is not None and owner_of(ns) != (spec.kind, spec.project, spec.name):
            if spec.state == "deleted":
                # Not ours: our object does not exist, which is what a delete wants.
                return ApplyOutcome(applied=True, state="deleted", generation=command.generation)
            holder = owner_of(ns)
            whose = f"{holder[0]} {holder[1]}/{holder[2]}" if holder else "nothing of Tether's (no owner label)"
            raise DriverError(
                f"namespace {ns_name} already exists and belongs to {whose}; "
                f"{spec.kind} {spec.project}/{spec.name} cannot use it and it is left alone",
                reason="Conflict",
            )
        current = generation_of(ns)
        if spec.state == "deleted":
            return self._delete(command, ns_name, ns, current)
        if ns is not None and is_terminating(ns):
            if current >= command.generation:
                return ApplyOutcome(applied=False, state="deleted", generation=current)
            raise DriverError(
                f"namespace {ns_name} of the deleted {spec.kind} {spec.project}/{spec.name} is still terminating; "
                "it is created again once it is gone",
                reason="NamespaceTerminating",
                transient=True,
            )
        if ns is not None and current > command.generation:
            return self._current(ns, current)
        now = self._clock()
        if ns is not None and current == command.generation:
            # The same generation again (a redelivery or a resync): put back what drifted.
            stored = decode_spec(annotations_of(ns).get(ANN_SPEC, ""))
            stamp = Stamp(
                spec=stored or spec,
                generation=current,
                op_id=annotations_of(ns).get(ANN_OP_ID, command.op_id),
                slept_at=float_annotation(ns, ANN_SLEPT_AT),
                active_at=float_annotation(ns, ANN_ACTIVE_AT),
            )
            self._converge(stamp, ns, repair=True)
            return self._current(ns, current)
        before = state_of(ns) if ns is not None else None
        slept_at, active_at = float_annotation(ns, ANN_SLEPT_AT), float_annotation(ns, ANN_ACTIVE_AT)
        if spec.state == "running":
            active_at = now if before != "running" or not active_at else active_at
            slept_at = 0.0
        elif before != "sleeping" or not slept_at:
            slept_at = now
        stamp = Stamp(
            spec=spec, generation=command.generation, op_id=command.op_id, slept_at=slept_at, active_at=active_at
        )
        self._converge(stamp, ns)
        if spec.kind == "tenant":
            if spec.state == "sleeping":
                self.runtime.quiesce(ns_name)
            elif before == "sleeping":
                self.runtime.restored(ns_name)
            else:
                self.runtime.forget(ns_name)  # its members may have changed: apply them inside it again
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
        settled, reason, message = self._settled(owner[0] if owner else "space", ns["metadata"]["name"])  # type: ignore[arg-type]
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

    def _children(self, workload: WorkloadKind, namespace: str) -> dict[tuple[str, str, str], Obj]:
        """Every object of the kinds the agent owns in ``namespace``, owned or not, by key."""
        found: dict[tuple[str, str, str], Obj] = {}
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
        owner = (stamp.spec.kind, stamp.spec.project, stamp.spec.name)
        existing: dict[tuple[str, str, str], Obj] = {}
        if ns is not None:
            existing = self._children(stamp.spec.kind, stamp.namespace)
            blocked = [
                f"{key[0]} {key[1]}/{key[2]}"
                for key in (object_key(o) for o in desired[1:])
                if key in existing and not is_owned(existing[key])
            ]
            if blocked:
                raise DriverError(
                    f"{', '.join(blocked)} already exist{'s' if len(blocked) == 1 else ''} without Tether's owner "
                    f"label; {stamp.spec.kind} {stamp.spec.project}/{stamp.spec.name} is not changed and "
                    "they are left alone",
                    reason="Conflict",
                )
        mine = {k: o for k, o in existing.items() if owner_of(o) == owner}
        if repair and ns is not None:
            found = {**mine, object_key({**ns, "kind": "Namespace"}): {**ns, "kind": "Namespace"}}
            desired[0]["metadata"]["annotations"][ANN_SPEC] = annotations_of(ns).get(ANN_SPEC, "")
            problems = drift(desired, found)
            if not problems:
                return
            logger.warning(
                "%s %s/%s at generation %d: putting back what drifted (%s)",
                *owner,
                stamp.generation,
                "; ".join(problems),
            )
        for obj in desired:
            self.api.apply(obj)
        wanted = {object_key(o) for o in desired}
        for key in mine.keys() - wanted:
            logger.info("deleting %s %s/%s: no longer wanted", *key)
            self.api.delete(key[0], key[2], key[1])

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
    async def inventory(self) -> tuple[InventoryItem, ...]:
        return await self._run(self._inventory_sync)

    def _inventory_sync(self) -> tuple[InventoryItem, ...]:
        workloads: dict[str, tuple[tuple[str, str, str], Obj]] = {}
        leaving: list[InventoryItem] = []
        for ns in self.api.list("Namespace", selector=MANAGED_SELECTOR):
            owner = owner_of(ns)
            name = ns["metadata"]["name"]
            # Only a namespace that is where its owner's objects would be (a label copied elsewhere is not ours).
            if owner is None or name != namespace_name(*owner):  # type: ignore[arg-type]
                continue
            if is_terminating(ns):
                # On its way out: reported deleted (at its delete's generation) until it is gone.
                kind, project, workload = owner
                leaving.append(
                    InventoryItem(
                        kind="tenant" if kind == "tenant" else "space",
                        project=project,
                        name=workload,
                        generation=generation_of(ns),
                        state="deleted",
                        version=annotations_of(ns).get(ANN_VERSION, ""),
                    )
                )
                continue
            workloads[name] = (owner, {**ns, "kind": "Namespace"})
        if not workloads:
            return tuple(sorted(leaving, key=lambda i: (i.kind, i.project, i.name)))
        children: dict[str, dict[tuple[str, str, str], Obj]] = {name: {} for name in workloads}
        for kind in TENANT_KINDS:
            if kind == "Secret":
                continue
            for obj in self.api.list(kind, selector=MANAGED_SELECTOR):
                key = object_key(obj)
                if key[1] in workloads and owner_of(obj) == workloads[key[1]][0]:
                    children[key[1]][key] = obj
        items = []
        for name, (owner, ns) in sorted(workloads.items()):
            kind, project, workload = owner
            if kind == "tenant":
                secret = self.api.get("Secret", vcluster.CONFIG_SECRET, name)
                if secret is not None and owner_of(secret) == owner:
                    secret["kind"] = "Secret"
                    children[name][object_key(secret)] = secret
            generation = generation_of(ns)
            problems = self._drift_of(ns, {**children[name], object_key(ns): ns})
            if problems:
                logger.warning(
                    "%s %s/%s drifted (%s); reporting generation 0 so that it is applied again",
                    kind,
                    project,
                    workload,
                    "; ".join(problems),
                )
                generation = 0
            state = state_of(ns)
            items.append(
                InventoryItem(
                    kind="tenant" if kind == "tenant" else "space",
                    project=project,
                    name=workload,
                    generation=generation,
                    state=state if state != "deleted" else "running",
                    version=annotations_of(ns).get(ANN_VERSION, ""),
                    last_activity=float_annotation(ns, ANN_ACTIVE_AT),
                )
            )
        return tuple(sorted(items + leaving, key=lambda i: (i.kind, i.project, i.name)))

    def _drift_of(self, ns: Obj, found: Mapping[tuple[str, str, str], Obj]) -> list[str]:
        """What differs between the workload's objects and what its namespace says they should be."""
        annotations = annotations_of(ns)
        spec: WorkloadSpec | None = decode_spec(annotations.get(ANN_SPEC, ""))
        owner = owner_of(ns)
        if spec is None or owner is None or (spec.kind, spec.project, spec.name) != owner:
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

    # --- the state Secret -------------------------------------------------------------------------------
    def _restore_state(self) -> None:
        """Copy the state Secret's files into the state directory when they are missing there."""
        assert self._state_secret is not None
        namespace, name = self._state_secret
        try:
            secret = self.api.get("Secret", name, namespace)
        except DriverError as exc:
            raise DriverError(f"cannot read the agent's state Secret {namespace}/{name}: {exc}") from None
        data = (secret or {}).get("data") or {}
        state_dir = self.settings.state_path
        for file in STATE_FILES:
            if file not in data:
                continue
            raw = base64.b64decode(data[file])
            self._mirrored[file] = raw
            path = state_dir / file
            if path.exists():
                continue
            try:
                write_bytes_atomic(path, raw)  # byte for byte: the creds file is not JSON
                self._mirrored[file] = path.read_bytes()
            except OSError as exc:
                raise DriverError(f"cannot restore {file} from the Secret {namespace}/{name}: {exc}") from None
            logger.info("restored %s from the Secret %s/%s", file, namespace, name)

    def _mirror_state(self) -> None:
        """Write changed state files into the state Secret (best effort; tried again on the next call)."""
        if self._state_secret is None:
            return
        namespace, name = self._state_secret
        with self._mirror_lock:
            changed: dict[str, str] = {}
            for file in STATE_FILES:
                path = self.settings.state_path / file
                try:
                    raw = path.read_bytes()
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    logger.warning("cannot read %s to keep it in the state Secret: %s", path, exc)
                    continue
                if self._mirrored.get(file) != raw:
                    changed[file] = base64.b64encode(raw).decode()
            if not changed:
                return
            try:
                self.api.patch_merge("Secret", name, {"data": changed}, namespace)
            except DriverError as exc:
                level = logging.DEBUG if self._mirror_failing else logging.WARNING
                logger.log(level, "cannot save the agent's state in the Secret %s/%s: %s", namespace, name, exc)
                self._mirror_failing = True
                return
            self._mirror_failing = False
            for file, encoded in changed.items():
                self._mirrored[file] = base64.b64decode(encoded)
                logger.info("saved %s in the Secret %s/%s", file, namespace, name)

    def gateway_upstream(self) -> Upstream:
        """The host API server for the Kubernetes gateway (``agent.gateway``), with the agent's credentials."""
        cfg = self.api.configuration
        if cfg.refresh_api_key_hook is not None:
            cfg.refresh_api_key_hook(cfg)  # in a pod: the projected token, re-read as it rotates
        return Upstream(
            url=str(cfg.host).rstrip("/"),
            ca_file=str(cfg.ssl_ca_cert or ""),
            cert_file=str(cfg.cert_file or ""),
            key_file=str(cfg.key_file or ""),
            authorization=str(cfg.get_api_key_with_prefix("BearerToken", alias="authorization") or ""),
            verify=bool(cfg.verify_ssl),
        )

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self.api.close)


def _parse_secret_ref(text: str) -> tuple[str, str] | None:
    text = text.strip()
    if not text:
        return None
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise DriverError(f"${STATE_SECRET_ENV} must be <namespace>/<name>, not {text!r}")
    return namespace, name
