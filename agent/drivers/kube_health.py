"""Health figures of a real cluster: its nodes, their capacity, its tenants' control planes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent import VERSION
from agent.drivers.kube_objects import parse_quantity
from agent.drivers.tenant_status import TenantStatus
from schemas.messages import Capacity, ClusterHealth, ControlPlaneHealth


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


def control_plane_of(status: TenantStatus) -> ControlPlaneHealth:
    """What a heartbeat says of one tenant's control plane: Ready when its pod is and its API answers."""
    return ControlPlaneHealth(
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
