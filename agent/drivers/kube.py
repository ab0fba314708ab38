"""The ``kube`` driver: a real cluster through the official ``kubernetes`` client.

Not available in this version; choosing it stops the agent with a clear message.
This is the only module of Tether that may import ``kubernetes``.
"""

from __future__ import annotations

from agent.errors import DriverError
from agent.settings import AgentSettings
from schemas.messages import ClusterHealth


class KubeDriver:
    """Placeholder for the Kubernetes driver; constructing it raises DriverError."""

    name = "kube"

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        raise DriverError("the kube driver is not yet supported in this version; use --driver sim")

    async def cluster_uid(self) -> str:  # pragma: no cover - never constructed
        raise DriverError("the kube driver is not yet supported in this version; use --driver sim")

    async def health(self) -> ClusterHealth:  # pragma: no cover - never constructed
        raise DriverError("the kube driver is not yet supported in this version; use --driver sim")

    async def close(self) -> None:  # pragma: no cover - never constructed
        return None
