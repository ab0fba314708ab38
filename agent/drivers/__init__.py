"""Drivers: how the agent reaches its cluster.

``sim`` is an in-memory cluster for demos and scale tests; ``kube`` talks to a
real Kubernetes API server through the official client (the only module that
imports ``kubernetes``, and only when it is chosen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from agent.settings import AgentSettings
from schemas.messages import ClusterHealth, Command, DesiredState, InventoryItem


@dataclass(frozen=True)
class ApplyOutcome:
    """What ``Driver.apply`` did with one command."""

    applied: bool
    """True: this generation was made true now. False: the object was already at this
    generation or a later one (a redelivery, or an older command), and nothing was done."""

    state: DesiredState
    """The object's state on the cluster after the call (``deleted`` when it does not exist)."""

    version: str = ""
    """The object's version on the cluster after the call."""

    generation: int = 0
    """The object's generation on the cluster after the call (its tombstone's when deleted)."""

    settled: bool = True
    """False while the cluster still gets there (a tenant's control plane not Ready yet, a namespace still
    terminating); ``reason`` and ``message`` say why. Such a driver reports again when it has settled
    (``StatusReporting``)."""

    reason: str = ""
    message: str = ""


@runtime_checkable
class Driver(Protocol):
    """One cluster, as the agent sees it."""

    name: str
    """The driver's name as reported to the platform (``sim``, ``kube``)."""

    async def cluster_uid(self) -> str:
        """A stable identity of the physical cluster (the duplicate guard keys on it)."""
        ...

    async def health(self) -> ClusterHealth:
        """Nodes, capacity and versions now; raises DriverError when the cluster is unreachable."""
        ...

    async def apply(self, command: Command) -> ApplyOutcome:
        """Make ``command.spec`` true on the cluster, idempotently.

        The revision check is against the object's *current* generation on the
        cluster: when it is ``>= command.generation`` nothing is done and
        ``applied`` is False. Otherwise the spec is applied and the new
        generation recorded in the same step, so a crash never leaves a change
        without its generation. Raises DriverError: ``transient`` (the API is
        unreachable; the agent retries the command later) or permanent (the
        command fails; the agent reports it and moves on).
        """
        ...

    async def inventory(self) -> tuple[InventoryItem, ...]:
        """Every tenant cluster and space the platform owns on the cluster now; DriverError if unreachable."""
        ...

    async def close(self) -> None:
        """Release what the driver holds; safe to call twice."""
        ...


@dataclass(frozen=True)
class WorkloadStatus:
    """How one tenant cluster is doing now, at the generation last applied to it."""

    kind: Literal["tenant", "space"]
    project: str
    name: str
    op_id: str
    generation: int
    state: DesiredState
    settled: bool
    reason: str = ""
    message: str = ""
    version: str = ""


@runtime_checkable
class StatusReporting(Protocol):
    """A driver whose workloads settle after ``apply`` returns: the agent asks it again and again and reports
    each change (a tenant that became Ready, a namespace that is gone)."""

    async def statuses(self) -> tuple[WorkloadStatus, ...]:
        """Every workload whose status the driver knows; one gone from the list since the last call is gone."""
        ...


def make_driver(settings: AgentSettings) -> Driver:
    """The driver ``settings.driver`` names; DriverError when it cannot be made."""
    if settings.driver == "kube":
        from agent.drivers.kube import KubeDriver

        return KubeDriver(settings)
    from agent.drivers.sim import SimCluster

    return SimCluster.from_settings(settings)
