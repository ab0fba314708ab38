"""The ``kube`` driver: a real cluster through the official ``kubernetes`` client.

Not available in this version; choosing it stops the agent with a clear message.
This is the only module of Tether that may import ``kubernetes``.
"""

from __future__ import annotations

from agent.drivers import ApplyOutcome
from agent.errors import DriverError
from agent.settings import AgentSettings
from schemas.messages import ClusterHealth, Command, InventoryItem

NOT_SUPPORTED = "the kube driver is not yet supported in this version; use --driver sim"


class KubeDriver:
    """Placeholder for the Kubernetes driver; constructing it raises DriverError."""

    name = "kube"

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        raise DriverError(NOT_SUPPORTED, reason="NotSupported")

    async def cluster_uid(self) -> str:  # pragma: no cover - never constructed
        raise DriverError(NOT_SUPPORTED, reason="NotSupported")

    async def health(self) -> ClusterHealth:  # pragma: no cover - never constructed
        raise DriverError(NOT_SUPPORTED, reason="NotSupported")

    async def apply(self, command: Command) -> ApplyOutcome:  # pragma: no cover - never constructed
        raise DriverError(NOT_SUPPORTED, reason="NotSupported")

    async def inventory(self) -> tuple[InventoryItem, ...]:  # pragma: no cover - never constructed
        raise DriverError(NOT_SUPPORTED, reason="NotSupported")

    async def close(self) -> None:  # pragma: no cover - never constructed
        return None
