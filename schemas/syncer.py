"""vCluster's syncer rules: the namespaced Role a tenant's vCluster gets in its host namespace.

One list for both sides that write it: the agent's vCluster driver (``agent.drivers.vcluster``) and the
agent's deploy manifests the API renders (``services.api.manifests``), whose own Role must hold every rule
it grants (Kubernetes refuses to let the agent grant what it does not have).
"""

from __future__ import annotations

from typing import Any

SYNCER_RULES: tuple[dict[str, Any], ...] = (
    {
        "apiGroups": [""],
        "resources": [
            "configmaps",
            "secrets",
            "services",
            "pods",
            "pods/attach",
            "pods/portforward",
            "pods/exec",
            "persistentvolumeclaims",
        ],
        "verbs": ["create", "delete", "patch", "update", "get", "list", "watch"],
    },
    {"apiGroups": [""], "resources": ["pods/status", "pods/ephemeralcontainers"], "verbs": ["patch", "update"]},
    {"apiGroups": [""], "resources": ["pods/resize"], "verbs": ["patch", "update"]},
    {
        "apiGroups": ["apps"],
        "resources": ["statefulsets", "replicasets", "deployments"],
        "verbs": ["get", "list", "watch", "patch", "update"],
    },
    {"apiGroups": [""], "resources": ["endpoints", "pods/log"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "get", "list", "watch"]},
    {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["create", "delete", "patch", "update"]},
    {
        "apiGroups": ["discovery.k8s.io"],
        "resources": ["endpointslices"],
        "verbs": ["create", "list", "get", "delete", "patch", "update", "watch"],
    },
)
"""The syncer's rules in its namespace: the chart's Role (``chart/templates/role.yaml``) with the defaults we keep
(pods, services, endpoints, endpoint slices, PVCs, the ConfigMaps and Secrets pods use; one replica, embedded
SQLite: no leases; Kubernetes >= 1.35: ``pods/resize``). No ClusterRole: nothing we turn on needs one."""
