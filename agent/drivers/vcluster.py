"""A tenant cluster's control plane as a vCluster of a pinned version: pure functions, no I/O.

What one vCluster is on the host (loft-sh/vcluster ``chart/`` at the pinned tag, which is what ``vcluster
create`` installs with Helm; see ``agent/deploy/README.md`` for the pages and for what is a guess):

- a Secret ``vc-config-<name>`` whose ``config.yaml`` is the whole ``vcluster.yaml``: the binary reads its
  configuration from there and fills in nothing itself, so it is the chart's defaults of the pinned version
  (``vcluster-<version>.json``) with the tenant's settings on top;
- a ServiceAccount ``vc-<name>`` and a RoleBinding ``vc-<name>`` of it, in the tenant's namespace only, to
  the syncer's rules (``schemas.syncer.SYNCER_RULES``: the chart's namespaced Role for the features turned on here);
- a Service ``<name>`` (443 to the API server's 8443) and a headless Service ``<name>-headless``;
- a StatefulSet ``<name>`` with one pod: an init container copies the Kubernetes binaries of the tenant's
  version out of ``ghcr.io/loft-sh/kubernetes:<k8s>``, the ``syncer`` container
  (``ghcr.io/loft-sh/vcluster-oss:<vcluster>``) runs API server, controller manager, the embedded SQLite
  datastore (kine) and the syncer, with its data on a PersistentVolumeClaim ``data-<name>-0``.

At run time vCluster writes the tenant's kubeconfig (cluster-admin inside the tenant) into the Secret
``vc-<name>``; the agent reaches the tenant's API with it. Pods created inside the tenant are synced into
the namespace labelled ``vcluster.loft.sh/managed-by=<name>``.

Every tenant namespace holds exactly one vCluster, so ``<name>`` is the same everywhere (``NAME``): the
agent's RBAC can then name the two Secrets it reads instead of reading every Secret of the cluster.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from schemas.messages import WorkloadSpec
from schemas.syncer import SYNCER_RULES

Obj = dict[str, Any]

VCLUSTER_VERSION = "0.36.1"
"""The vCluster release every tenant runs (image tag, chart defaults and RBAC are of this version)."""

NAME = "vcluster"
"""The vCluster's name (Helm release name) in every tenant namespace."""
CONFIG_SECRET = f"vc-config-{NAME}"
KUBECONFIG_SECRET = f"vc-{NAME}"
KUBECONFIG_KEY = "config"
SERVICE_ACCOUNT = f"vc-{NAME}"
SYNCER_BINDING = f"vc-{NAME}"
HEADLESS_SERVICE = f"{NAME}-headless"
POD_NAME = f"{NAME}-0"
DATA_CLAIM = f"data-{NAME}-0"
API_PORT = 8443
SYNCER_CLUSTER_ROLE = "tether-tenant-syncer"
"""The ClusterRole (installed with the agent) each tenant's syncer is bound to, in its own namespace only."""
MANAGED_BY = "vcluster.loft.sh/managed-by"
"""Label vCluster puts on what it syncs into the host namespace (its value is the vCluster's name)."""
POD_LABELS = {"app": "vcluster", "release": NAME}

KUBERNETES_TAGS: dict[int, str] = {
    31: "v1.31.1",
    32: "v1.32.1",
    33: "v1.33.4",
    34: "v1.34.0",
    35: "v1.35.0",
    36: "v1.36.0",
}
"""Minor version -> tag of ``loft-sh/kubernetes`` that vCluster 0.36.1 uses for it (its
``config/default_extra_values.go``). A version given with its patch (``v1.35.2``) uses that tag as is."""

_VERSION = re.compile(r"^v?1\.(\d+)(?:\.(\d+))?$")


class VClusterSpecError(ValueError):
    """A tenant spec that cannot be made into a vCluster (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class VClusterSettings:
    """Where the images come from and how the control plane's volume is made (configurable for air-gapped sites)."""

    registry: str = "ghcr.io"
    """Registry of both images (``TETHER_TENANT_REGISTRY``)."""
    repository: str = "loft-sh/vcluster-oss"
    """The control plane's image without registry and tag (``TETHER_TENANT_IMAGE_REPOSITORY``)."""
    tag: str = VCLUSTER_VERSION
    kubernetes_repository: str = "loft-sh/kubernetes"
    """The Kubernetes binaries' image (``TETHER_TENANT_KUBERNETES_REPOSITORY``); its tag is the tenant's version."""
    storage: str = "5Gi"
    """Size of each control plane's data volume (kept while it sleeps and across upgrades)."""
    storage_class: str = ""
    """StorageClass of that volume; empty: the cluster's default."""


def kubernetes_tag(version: str) -> str:
    """The ``loft-sh/kubernetes`` tag of a tenant version (``v1.35`` -> ``v1.35.0``)."""
    match = _VERSION.match(version.strip())
    if not match:
        raise VClusterSpecError(f"invalid tenant version {version!r}: expected e.g. v1.36 or v1.36.2")
    minor, patch = int(match.group(1)), match.group(2)
    if patch is not None:
        return f"v1.{minor}.{int(patch)}"
    if minor not in KUBERNETES_TAGS:
        supported = ", ".join(f"v1.{m}" for m in sorted(KUBERNETES_TAGS))
        raise VClusterSpecError(f"vCluster {VCLUSTER_VERSION} has no Kubernetes v1.{minor}: supported are {supported}")
    return KUBERNETES_TAGS[minor]


def _image(registry: str, repository: str, tag: str) -> str:
    return f"{registry.rstrip('/')}/{repository}:{tag}" if registry else f"{repository}:{tag}"


def control_plane_image(settings: VClusterSettings) -> str:
    return _image(settings.registry, settings.repository, settings.tag)


def kubernetes_image(settings: VClusterSettings, version: str) -> str:
    return _image(settings.registry, settings.kubernetes_repository, kubernetes_tag(version))


def version_of_image(image: str) -> str:
    """The Kubernetes version a ``loft-sh/kubernetes`` image runs (its tag), ``""`` when it has no tag."""
    tail = image.rsplit("/", 1)[-1]
    return tail.partition(":")[2].partition("@")[0]


@cache
def chart_defaults() -> Obj:
    """The chart's default values of the pinned version (read once)."""
    path = Path(__file__).with_name(f"vcluster-{VCLUSTER_VERSION}.json")
    data: Obj = json.loads(path.read_text())
    return data


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> Obj:
    """``over`` on top of ``base``, maps merged key by key (as Helm merges values), everything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _quantity_cpu(cores: float) -> str:
    milli = max(1, round(cores * 1000))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def _quantity_memory(size: int) -> str:
    for suffix, factor in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(int(size))


def control_plane_resources(spec: WorkloadSpec) -> Obj:
    """The chart's requests (200m CPU, 256Mi) and memory limit (4Gi), capped so that at least half of what the
    tenant may use is left to its workloads (synced into the same namespace, under the same quota). No CPU
    limit: the namespace's LimitRange gives the default one."""
    cpu = spec.resources.cpu
    memory = spec.resources.memory
    half = (memory // 2) // 2**20 * 2**20 if memory > 0 else 0
    requests: Obj = {"cpu": _quantity_cpu(min(0.2, cpu) if cpu > 0 else 0.2)}
    requests["memory"] = _quantity_memory(min(256 * 2**20, half) if half else 256 * 2**20)
    limits: Obj = {"memory": _quantity_memory(min(4 * 2**30, half) if half else 4 * 2**30)}
    return {"requests": requests, "limits": limits}


def values(spec: WorkloadSpec, namespace: str, settings: VClusterSettings) -> Obj:
    """The ``vcluster.yaml`` of one tenant: the chart's defaults with the tenant's settings on top."""
    tag = kubernetes_tag(spec.version)
    claim: Obj = {"enabled": True, "size": settings.storage, "retentionPolicy": "Retain"}
    if settings.storage_class:
        claim["storageClass"] = settings.storage_class
    overrides: Obj = {
        "controlPlane": {
            "distro": {
                "k8s": {
                    "enabled": True,
                    "image": {"registry": settings.registry, "repository": settings.kubernetes_repository, "tag": tag},
                }
            },
            "statefulSet": {
                "image": {"registry": settings.registry, "repository": settings.repository, "tag": settings.tag},
                "resources": control_plane_resources(spec),
                "highAvailability": {"replicas": 1},
                "persistence": {"volumeClaim": claim},
            },
        },
        # What is synced: the defaults of this version, said explicitly (pods, services, endpoints, PVCs and the
        # ConfigMaps/Secrets pods use, to the host; events from it; fake nodes, no access to the host's nodes).
        "sync": {
            "toHost": {
                "pods": {"enabled": True},
                "services": {"enabled": True},
                "endpoints": {"enabled": True},
                "persistentVolumeClaims": {"enabled": True},
                "configMaps": {"enabled": True, "all": False},
                "secrets": {"enabled": True, "all": False},
                "ingresses": {"enabled": False},
            },
            "fromHost": {"nodes": {"enabled": False}, "events": {"enabled": True}},
        },
        # The agent creates the namespace's RBAC, quota and limits itself.
        "rbac": {"role": {"enabled": True}, "clusterRole": {"enabled": False}},
        "policies": {"resourceQuota": {"enabled": False}, "limitRange": {"enabled": False}},
        "telemetry": {"enabled": False},
        # The kubeconfig vCluster writes into Secret vc-<name>: the agent reaches the tenant through the Service.
        "exportKubeConfig": {"context": "tether", "server": f"https://{NAME}.{namespace}.svc:443"},
    }
    return merge(chart_defaults(), overrides)


def config_yaml(spec: WorkloadSpec, namespace: str, settings: VClusterSettings) -> str:
    return yaml.safe_dump(values(spec, namespace, settings), sort_keys=True)


def config_hash(config: str) -> str:
    return hashlib.sha256(config.encode()).hexdigest()


def syncer_cluster_role(labels: Mapping[str, str] | None = None) -> Obj:
    """The ClusterRole installed with the agent; each tenant binds it in its own namespace only."""
    meta: Obj = {"name": SYNCER_CLUSTER_ROLE}
    if labels:
        meta["labels"] = dict(labels)
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": meta,
        "rules": [copy.deepcopy(rule) for rule in SYNCER_RULES],
    }


def _probe(path: str, period: int, failures: int, delay: int = 0) -> Obj:
    probe: Obj = {
        "httpGet": {"path": path, "port": API_PORT, "scheme": "HTTPS"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }
    if delay:
        probe["initialDelaySeconds"] = delay
    return probe


def _field_env(name: str, path: str) -> Obj:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def pod_spec(spec: WorkloadSpec, settings: VClusterSettings) -> Obj:
    """The control plane pod, as the chart's ``statefulset.yaml`` makes it for the values of ``values()``."""
    resources = control_plane_resources(spec)
    init: Obj = {
        "name": "kubernetes",
        "image": kubernetes_image(settings, spec.version),
        "command": ["cp"],
        "args": ["-r", "/kubernetes/.", "/binaries/"],
        "volumeMounts": [{"name": "binaries", "mountPath": "/binaries"}],
        "resources": resources,
    }
    syncer: Obj = {
        "name": "syncer",
        "image": control_plane_image(settings),
        "livenessProbe": _probe("/healthz", 2, 60, delay=60),
        "readinessProbe": _probe("/readyz", 2, 60),
        "startupProbe": _probe("/readyz", 6, 300),
        "securityContext": {"allowPrivilegeEscalation": False, "runAsUser": 0, "runAsGroup": 0},
        "resources": resources,
        "env": [
            {"name": "VCLUSTER_NAME", "value": NAME},
            _field_env("POD_NAME", "metadata.name"),
            _field_env("POD_IP", "status.podIP"),
            _field_env("NODE_NAME", "spec.nodeName"),
            _field_env("NODE_IP", "status.hostIP"),
        ],
        "ports": [{"name": "https", "containerPort": API_PORT, "protocol": "TCP"}],
        "volumeMounts": [
            {"name": "data", "mountPath": "/data"},
            {"name": "binaries", "mountPath": "/binaries"},
            {"name": "certs", "mountPath": "/pki"},
            {"name": "helm-cache", "mountPath": "/.cache/helm"},
            {"name": "vcluster-config", "mountPath": "/var/lib/vcluster"},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }
    return {
        "serviceAccountName": SERVICE_ACCOUNT,
        "terminationGracePeriodSeconds": 15,
        "enableServiceLinks": True,
        "volumes": [
            {"name": "helm-cache", "emptyDir": {}},
            {"name": "binaries", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
            {"name": "certs", "emptyDir": {}},
            {"name": "vcluster-config", "secret": {"secretName": CONFIG_SECRET}},
        ],
        "initContainers": [init],
        "containers": [syncer],
    }
