"""Drivers: how the agent reaches its cluster.

``sim`` is an in-memory cluster for demos and scale tests; ``kube`` talks to a
real Kubernetes API server through the official client (the only module that
imports ``kubernetes``, and only when it is chosen).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from agent.settings import AgentSettings
from schemas.messages import ClusterHealth


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

    async def close(self) -> None:
        """Release what the driver holds; safe to call twice."""
        ...


def make_driver(settings: AgentSettings) -> Driver:
    """The driver ``settings.driver`` names; DriverError when it cannot be made."""
    if settings.driver == "kube":
        from agent.drivers.kube import KubeDriver

        return KubeDriver(settings)
    from agent.drivers.sim import SimCluster

    return SimCluster.from_settings(settings)
