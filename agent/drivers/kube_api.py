"""The kube driver's REST layer: JSON dicts in and out over ``kubernetes.client.ApiClient``.

With ``agent.drivers.kube``'s other modules, the only part of Tether that imports ``kubernetes``. Every
failure is a ``DriverError``: permanent for 4xx answers (reason from the status code, message from the API
server), ``ClusterUnreachable`` when the server cannot be reached or answers 429/5xx. Synchronous: the
driver runs every call in a worker thread.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from agent.drivers.kube_objects import FIELD_MANAGER, Obj, object_key
from agent.errors import ClusterUnreachable, DriverError
from agent.gateway_upstream import Upstream

DEFAULT_TIMEOUT = 30.0
"""Seconds per API request (``TETHER_KUBE_TIMEOUT``)."""


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


def _failure(status: int, data: bytes, doing: str) -> DriverError:
    """The DriverError for an answer >= 300 (``doing``: what was tried, for the message)."""
    reason, message, details = _status_message(data)
    message = message or f"HTTP {status}"
    if status in {401, 429} or status >= 500:
        return _unreachable(status, reason, doing, message)
    causes = [c.get("reason") for c in details.get("causes") or [] if isinstance(c, dict)]
    if status == 403 and "NamespaceTerminating" in causes:
        return DriverError(f"{doing}{message}", reason="NamespaceTerminating", transient=True)
    return DriverError(f"{doing}{message}", reason=_REASONS.get(status) or reason or f"HTTP{status}")


def _unreachable(status: int, reason: str, doing: str, message: str) -> ClusterUnreachable:
    if status == 401:
        # Credentials the server does not (or no longer) accept: nothing can be done until they are
        # fixed or refreshed, so the cluster counts as unreachable and commands wait.
        return ClusterUnreachable(
            f"{doing}the API server refused the agent's credentials: {message}", reason="Unauthorized"
        )
    return ClusterUnreachable(f"{doing}the API server answered {status}: {message}", reason=reason or "ServerError")


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


def upstream_kubeconfig(upstream: Upstream) -> dict[str, Any]:
    """A kubeconfig of ``upstream`` with inline data only (the client's loader writes it to private temp files)."""

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    cluster: dict[str, Any] = {"server": upstream.url}
    if upstream.ca_data:
        cluster["certificate-authority-data"] = b64(upstream.ca_data)
    user: dict[str, Any] = {}
    if upstream.cert_data and upstream.key_data:
        user = {"client-certificate-data": b64(upstream.cert_data), "client-key-data": b64(upstream.key_data)}
    if upstream.authorization.startswith("Bearer "):
        user["token"] = upstream.authorization.removeprefix("Bearer ")
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "tenant", "cluster": cluster}],
        "users": [{"name": "tenant", "user": user}],
        "contexts": [{"name": "tenant", "context": {"cluster": "tenant", "user": "tenant"}}],
        "current-context": "tenant",
    }


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

    @classmethod
    def from_upstream(cls, upstream: Upstream, *, timeout: float = DEFAULT_TIMEOUT) -> KubeApi:
        """A client of a tenant's API server from what ``agent.gateway_tenant.parse_kubeconfig`` accepted: a
        kubeconfig rebuilt from the checked server and inline credentials alone, so nothing of the tenant's
        file (exec plugins, file paths, proxies) reaches the kubernetes client's loader."""
        return cls.from_kubeconfig_dict(upstream_kubeconfig(upstream), timeout=timeout)

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
        status, data = self._send(method, path, body=body, query=query, content_type=content_type)
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
        raise _failure(status, data, f"{what}: " if what else f"{method} {path}: ")

    def _send(
        self, method: str, path: str, *, body: Any, query: Iterable[tuple[str, str]], content_type: str
    ) -> tuple[int, bytes]:
        """(status, body) of one call; ClusterUnreachable when there is no answer."""
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
            return int(response.status), response.read() or b""  # type: ignore[no-untyped-call]
        except (urllib3.exceptions.HTTPError, OSError, k8s_client.exceptions.ApiException) as exc:
            raise ClusterUnreachable(f"cannot reach the Kubernetes API server at {self.host}: {exc}") from None

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
