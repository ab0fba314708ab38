"""How a tenant cluster is doing, from its namespace, its control plane's pod and its API: pure, no I/O.

``agent.drivers.kube`` reads the objects and asks the tenant's API; what that means is decided here:

- a running tenant is **ready** when its control plane's pod (``vcluster-0``) is Ready and the tenant's own
  API answered ``/readyz`` (and its members' access is applied inside it); until then the reason comes from
  the pod's status (the scheduler's ``Unschedulable``, a container's ``ImagePullBackOff``...);
- a sleeping tenant has **settled** when no pod is left in its namespace;
- a deleted one has settled when its namespace is gone (it is then no longer listed at all).

The version a tenant runs is the tag of its Ready pod's Kubernetes image (what actually runs, whatever
the spec says).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from agent.drivers import vcluster
from schemas.messages import DesiredState, Member, WorkloadKind

Obj = dict[str, Any]

MESSAGE_LIMIT = 500
"""Characters of a reason's message kept (a pod's status is written by others: bounded)."""

TENANT_ROLES = {"admin": "cluster-admin", "edit": "edit", "view": "view"}
"""The ClusterRole inside a tenant cluster that a member's access level gives."""


@dataclass(frozen=True)
class TenantStatus:
    """One tenant (or a space, which is settled once applied) as the agent sees it now."""

    kind: WorkloadKind
    project: str
    name: str
    op_id: str
    generation: int
    state: DesiredState
    settled: bool
    reason: str = ""
    message: str = ""
    version: str = ""
    pods: int = 0
    replicas: int = 0
    ready_replicas: int = 0

    @property
    def key(self) -> tuple[str, str, str]:
        return self.kind, self.project, self.name


def _bounded(text: Any) -> str:
    return str(text or "")[:MESSAGE_LIMIT]


def _conditions(pod: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    out = {}
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and isinstance(cond.get("type"), str):
            out[cond["type"]] = cond
    return out


def pod_ready(pod: Mapping[str, Any]) -> bool:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    return (_conditions(pod).get("Ready") or {}).get("status") == "True"


def pod_problem(pod: Mapping[str, Any]) -> tuple[str, str]:
    """(reason, message) of a pod that is not Ready, from its status, most specific first."""
    for look in (_deleting, _unscheduled, _containers_problem, _not_ready):
        if (problem := look(pod)) is not None:
            return problem
    phase = (pod.get("status") or {}).get("phase") or "Pending"
    return "ContainersNotReady", f"the control plane's pod is {phase}"


def _deleting(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating", "the control plane's pod is being deleted"
    return None


def _unscheduled(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    scheduled = _conditions(pod).get("PodScheduled") or {}
    if scheduled.get("status") == "False":
        return _bounded(scheduled.get("reason") or "Unschedulable"), _bounded(scheduled.get("message"))
    return None


def _containers_problem(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    status = pod.get("status") or {}
    for key in ("initContainerStatuses", "containerStatuses"):
        for cs in status.get(key) or []:
            if isinstance(cs, Mapping) and (problem := _container_problem(cs)) is not None:
                return problem
    return None


def _not_ready(pod: Mapping[str, Any]) -> tuple[str, str] | None:
    ready = _conditions(pod).get("Ready") or {}
    if ready.get("reason"):
        return _bounded(ready["reason"]), _bounded(ready.get("message"))
    return None


def _container_problem(cs: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) of a container that waits for something but its pod's start, or that failed."""
    state = cs.get("state") or {}
    waiting = state.get("waiting") or {}
    if waiting.get("reason") and waiting.get("reason") != "PodInitializing":
        return _bounded(waiting["reason"]), _bounded(waiting.get("message") or f"container {cs.get('name')}")
    terminated = state.get("terminated") or {}
    if terminated and terminated.get("exitCode", 0) != 0:
        message = terminated.get("message") or f"container {cs.get('name')} exited {terminated.get('exitCode')}"
        return _bounded(terminated.get("reason") or "Error"), _bounded(message)
    return None


def running_version(pod: Mapping[str, Any]) -> str:
    """The Kubernetes version of a control plane's pod: the tag of its ``kubernetes`` init container's image."""
    for container in (pod.get("spec") or {}).get("initContainers") or []:
        if isinstance(container, Mapping) and container.get("name") == "kubernetes":
            return vcluster.version_of_image(str(container.get("image") or ""))
    return ""


def control_plane_state(pods: Iterable[Mapping[str, Any]]) -> tuple[Mapping[str, Any] | None, int]:
    """(the control plane's pod or None, how many pods the namespace holds) from the namespace's pods."""
    control, count = None, 0
    for pod in pods:
        count += 1
        if (pod.get("metadata") or {}).get("name") == vcluster.POD_NAME:
            control = pod
    return control, count


def tenant_member_bindings(members: Iterable[Member], labels: Mapping[str, str]) -> list[Obj]:
    """ClusterRoleBindings *inside* a tenant cluster: one per member (the highest access when listed twice)."""
    rank = {"view": 0, "edit": 1, "admin": 2}
    best: dict[str, Member] = {}
    for member in members:
        old = best.get(member.subject)
        if old is None or rank[member.access] > rank[old.access]:
            best[member.subject] = member
    out = []
    for subject, member in sorted(best.items()):
        kind, _, name = subject.partition(":")
        prefix = "tether:user:" if kind == "user" else "tether:team:"
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "ClusterRoleBinding",
                # The access is in the name: a binding's roleRef cannot change, a new access is a new binding.
                "metadata": {"name": f"tether-{kind}-{name}-{member.access}", "labels": dict(labels)},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": TENANT_ROLES[member.access],
                },
                "subjects": [
                    {
                        "apiGroup": "rbac.authorization.k8s.io",
                        "kind": "User" if kind == "user" else "Group",
                        "name": f"{prefix}{name}",
                    }
                ],
            }
        )
    return out
