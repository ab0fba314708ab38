"""A tenant cluster's API server as the gateway reaches it: found where vCluster publishes it.

vCluster writes a kubeconfig of its API server into Secret ``vc-<name>`` (key ``config``) of its host
namespace (``agent.drivers.vcluster.KUBECONFIG_SECRET``); the kube driver reads the same Secret for the
tenant's status and to keep the members' ClusterRoleBindings *inside* it. The gateway reads it with the
agent's own host credentials (whose RBAC allows ``get`` of that one Secret name, no other Secret) and calls
the tenant's API server with the credentials found there, impersonating the member: inside the tenant the
members' bindings decide (admin is cluster-admin, edit is edit, view is view).

The Secret is written from the tenant's namespace, by a control plane the tenant drives: its content is
hostile. Hence:

- inline data only: no file paths, no ``exec`` or ``auth-provider`` (a kubeconfig must never make the agent
  read its own files, such as its ServiceAccount token, or run a command);
- HTTPS only, to the tenant's own Service (``vcluster.<namespace>.svc``, as the driver configures
  ``exportKubeConfig.server``) or a host the operator allowed (``$TETHER_GATEWAY_TENANT_HOSTS``, comma
  separated; test rigs run the tenant's API elsewhere), and never the host cluster's API server: tenants
  never reach the host cluster;
- bounded size, and only what the agent's RBAC lets it read.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

from agent.drivers import vcluster
from agent.gateway_upstream import Upstream

TENANT_HOSTS_ENV = "TETHER_GATEWAY_TENANT_HOSTS"
KUBECONFIG_LIMIT = 256 * 1024
"""Bytes of a tenant's kubeconfig Secret read at most."""
CACHE_TTL = 60.0
"""Seconds a tenant's endpoint and credentials are reused before its Secret is read again (rotation)."""
CACHE_SIZE = 1024
"""Tenants whose endpoint is remembered at once (the oldest is forgotten first)."""
HOST_API_NAMES = frozenset(
    {"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
)


class TenantUnreachable(Exception):
    """Why a tenant's API server cannot be called now (an HTTP status and the reason, for the member)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower().rstrip(".")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"invalid port in {url[:200]!r}") from None
    return host, port


def allowed_hosts(namespace: str, environ: dict[str, str] | None = None) -> set[str]:
    extra = (environ if environ is not None else dict(os.environ)).get(TENANT_HOSTS_ENV, "")
    own = {f"{vcluster.NAME}.{namespace}.svc", f"{vcluster.NAME}.{namespace}.svc.cluster.local"}
    return own | {h.strip().lower() for h in extra.split(",") if h.strip()}


def _pem(entry: dict[str, Any], key: str, what: str) -> str:
    raw = entry.get(key)
    if raw is None:
        return ""
    try:
        text = base64.b64decode(str(raw), validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError(f"{what} is not base64 PEM") from None
    if "-----BEGIN " not in text:
        raise ValueError(f"{what} is not PEM")
    return text


def _named(config: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for entry in config.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            inner = entry.get(section[:-1])
            if isinstance(inner, dict):
                return inner
    raise ValueError(f"no {section[:-1]} {name!r}")


def parse_kubeconfig(raw: bytes, namespace: str, host_url: str, environ: dict[str, str] | None = None) -> Upstream:
    """The tenant's API server and credentials from the kubeconfig vCluster wrote; ValueError saying why not."""
    if len(raw) > KUBECONFIG_LIMIT:
        raise ValueError(f"larger than {KUBECONFIG_LIMIT} bytes")
    config = yaml.safe_load(raw)
    if not isinstance(config, dict):
        raise ValueError("not a kubeconfig")
    current = config.get("current-context")
    if not current:
        raise ValueError("it names no current-context")
    context = _named(config, "contexts", str(current))
    cluster = _named(config, "clusters", str(context.get("cluster") or ""))
    user = _named(config, "users", str(context.get("user") or ""))
    forbidden = {"certificate-authority", "insecure-skip-tls-verify", "proxy-url"} & cluster.keys()
    forbidden |= {"client-certificate", "client-key", "tokenFile", "exec", "auth-provider"} & user.keys()
    if forbidden:
        raise ValueError(f"it uses {', '.join(sorted(forbidden))} (only inline data is accepted)")
    server = str(cluster.get("server") or "").rstrip("/")
    if not server.startswith("https://"):
        raise ValueError(f"its server {server[:200]!r} is not HTTPS")
    host, port = _address(server)
    if host in HOST_API_NAMES or (host, port) == _address(host_url):
        raise ValueError(f"its server {server[:200]!r} is the host cluster's API server")
    if host not in allowed_hosts(namespace, environ):
        raise ValueError(f"its server {server[:200]!r} is not the tenant's own Service {vcluster.NAME}.{namespace}.svc")
    token = user.get("token")
    upstream = Upstream(
        url=server,
        ca_data=_pem(cluster, "certificate-authority-data", "certificate-authority-data"),
        cert_data=_pem(user, "client-certificate-data", "client-certificate-data"),
        key_data=_pem(user, "client-key-data", "client-key-data"),
        authorization=f"Bearer {token}" if isinstance(token, str) and token else "",
    )
    if not upstream.authorization and not (upstream.cert_data and upstream.key_data):
        raise ValueError("it holds no credentials (a token or a client certificate and key)")
    return upstream


class TenantUpstreams:
    """Each tenant's API server, read from its Secret with the agent's host credentials; cached briefly."""

    def __init__(self, host: Callable[[], Upstream], client: Callable[[Upstream], httpx.AsyncClient]) -> None:
        self._host = host
        self._client = client
        self._cache: dict[str, tuple[float, Upstream]] = {}

    def forget(self, namespace: str) -> None:
        """After the tenant refused the credentials: read its Secret again next time (they rotated)."""
        self._cache.pop(namespace, None)

    async def get(self, namespace: str, what: str) -> Upstream:
        now = time.monotonic()
        hit = self._cache.get(namespace)
        if hit is not None and now - hit[0] < CACHE_TTL:
            return hit[1]
        host = self._host()
        upstream = parse_secret(await self._read_secret(host, namespace, what), namespace, host.url, what)
        if len(self._cache) >= CACHE_SIZE:
            del self._cache[min(self._cache, key=lambda k: self._cache[k][0])]
        self._cache[namespace] = (now, upstream)
        return upstream

    async def _read_secret(self, host: Upstream, namespace: str, what: str) -> dict[str, Any]:
        path = f"/api/v1/namespaces/{namespace}/secrets/{vcluster.KUBECONFIG_SECRET}"
        auth = [("Authorization", host.authorization)] if host.authorization else []
        try:
            resp = await self._client(host).get(host.url + path, headers=auth)
        except httpx.HTTPError as exc:
            raise TenantUnreachable(503, f"cannot read where {what} answers: {exc}") from None
        if resp.status_code == 404:
            raise TenantUnreachable(
                503, f"{what} has not published its API server yet (Secret {vcluster.KUBECONFIG_SECRET}): starting?"
            )
        if resp.status_code != 200:
            text = f"the agent cannot read Secret {namespace}/{vcluster.KUBECONFIG_SECRET} (HTTP {resp.status_code})"
            raise TenantUnreachable(502, text)
        if len(resp.content) > 2 * KUBECONFIG_LIMIT:
            raise TenantUnreachable(502, f"Secret {namespace}/{vcluster.KUBECONFIG_SECRET} is too large")
        body = resp.json()
        return body if isinstance(body, dict) else {}


def parse_secret(secret: dict[str, Any], namespace: str, host_url: str, what: str) -> Upstream:
    data = secret.get("data") if isinstance(secret.get("data"), dict) else {}
    encoded = (data or {}).get(vcluster.KUBECONFIG_KEY)
    where = f"Secret {namespace}/{vcluster.KUBECONFIG_SECRET}"
    if not isinstance(encoded, str) or not encoded:
        raise TenantUnreachable(503, f"{what} has not written its kubeconfig into {where} yet: starting?")
    try:
        if len(encoded) > 2 * KUBECONFIG_LIMIT:
            raise ValueError(f"larger than {KUBECONFIG_LIMIT} bytes")
        return parse_kubeconfig(base64.b64decode(encoded, validate=True), namespace, host_url)
    except (ValueError, binascii.Error, yaml.YAMLError) as exc:
        raise TenantUnreachable(502, f"{where} of {what} holds no usable kubeconfig: {exc}") from None
