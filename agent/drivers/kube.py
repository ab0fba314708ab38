"""The ``kube`` driver: a real cluster through the official ``kubernetes`` client.

The driver is split by concern; this module wires the parts and is what the agent makes:

- ``kube_api``: the REST layer (the only module that imports ``kubernetes``), errors mapped to
  ``DriverError`` (403/409/422 and other 4xx permanent, with the API server's reason; connection
  failures, 401, 429 and 5xx transient ``ClusterUnreachable``);
- ``kube_apply``: apply and delete, idempotent by the generation kept on the workload's namespace;
- ``kube_inventory``: what Tether owns on the cluster, drift reported as generation 0;
- ``kube_health``: nodes, capacity and the tenants' control planes;
- ``kube_state``: the agent's identity files kept in a Secret (``$TETHER_AGENT_STATE_SECRET``);
- ``kube_objects`` (pure): what exists for each tenant cluster and space; ``kube_tenants`` and
  ``vcluster``: tenant clusters (vCluster), their readiness, sleep and wake.

The client is synchronous; every call runs in a worker thread, applies one at a time.

Knobs (environment, read when the driver is made): ``TETHER_TENANT_REGISTRY`` (registry of the tenant
images, default ``ghcr.io``), ``TETHER_TENANT_IMAGE_REPOSITORY`` (default ``loft-sh/vcluster-oss``),
``TETHER_TENANT_KUBERNETES_REPOSITORY`` (default ``loft-sh/kubernetes``), ``TETHER_TENANT_STORAGE`` (size of
a control plane's volume, default ``5Gi``), ``TETHER_TENANT_STORAGE_CLASS``, ``TETHER_AGENT_NAMESPACE`` (the
agent's namespace, admitted to the tenants' APIs; default ``tether-agent``), ``TETHER_KUBE_TIMEOUT`` (seconds
per API request, default 30).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import msgspec

from agent import VERSION
from agent.drivers import ApplyOutcome, WorkloadStatus, vcluster
from agent.drivers.kube_api import DEFAULT_TIMEOUT, KubeApi, Resource, load_configuration
from agent.drivers.kube_apply import KubeApplier
from agent.drivers.kube_health import control_plane_of, health_from, node_is_ready
from agent.drivers.kube_inventory import KubeInventory
from agent.drivers.kube_objects import TenantSettings, parse_quantity
from agent.drivers.kube_state import STATE_SECRET_ENV, StateSecret, parse_secret_ref
from agent.drivers.kube_tenants import TenantRuntime
from agent.errors import ClusterUnreachable, DriverError
from agent.gateway_upstream import Upstream
from agent.settings import AgentSettings
from schemas.messages import ClusterHealth, Command, ControlPlaneHealth, InventoryItem

__all__ = [
    "DEFAULT_TIMEOUT",
    "STATE_SECRET_ENV",
    "DriverError",
    "KubeApi",
    "KubeDriver",
    "Resource",
    "health_from",
    "load_configuration",
    "node_is_ready",
    "tenant_settings_from_env",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        self.runtime = TenantRuntime(
            self.api, lambda upstream: KubeApi.from_upstream(upstream, timeout=timeout), self.api.host, env
        )
        self._applier = KubeApplier(self.api, self.tenants, self.runtime, clock)
        self._inventory = KubeInventory(self.api, self.tenants)
        self._lock = asyncio.Lock()
        self._uid = ""
        self._last_health = ClusterHealth(agent_version=VERSION, driver=self.name, api_reachable=False)
        self._closed = False
        self._state_secret: StateSecret | None = None
        if (ref := parse_secret_ref(env.get(STATE_SECRET_ENV, ""))) is not None:
            self._state_secret = StateSecret(self.api, *ref, settings.state_path)
            self._state_secret.restore()

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
        health = msgspec.structs.replace(health, control_planes=self._control_planes_sync())
        if self._state_secret is not None:
            self._state_secret.mirror()
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

    async def control_planes(self) -> tuple[ControlPlaneHealth, ...]:
        """Readiness, version and pods of every tenant's control plane."""
        return await self._run(self._control_planes_sync)

    def _control_planes_sync(self) -> tuple[ControlPlaneHealth, ...]:
        planes = [control_plane_of(s) for s in self.runtime.statuses() if s.state != "deleted"]
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

    # --- apply and inventory ----------------------------------------------------------------------
    async def apply(self, command: Command) -> ApplyOutcome:
        async with self._lock:
            return await self._run(self._applier.apply, command)

    async def inventory(self) -> tuple[InventoryItem, ...]:
        return await self._run(self._inventory.items)

    # --- the gateway ----------------------------------------------------------------------------------
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
