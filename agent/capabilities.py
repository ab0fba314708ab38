"""What an agent can do for the platform beyond applying commands: its capabilities.

A capability is made once the agent is connected and welcomed, from a
``Context`` (the connection, the cluster's name, the driver, a tracer); it
``serve()``s in its own named task under the agent's TaskGroup, is ``reset()``
after every reconnect (a subscription's peers have lost track of what was
open), and is ``close()``d in the agent's ordered shutdown, before the
connection. A capability that fails stops the agent like any other task.

To add one: write its module (``agent/<name>.py``), then add one line to
``CAPABILITIES`` below. Nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from opentelemetry.sdk.trace import TracerProvider

from agent.bus import Connection
from agent.drivers import Driver
from agent.gateway import AgentGateway


@dataclass(frozen=True)
class Context:
    """What a capability is made from."""

    connection: Connection
    cluster: str
    driver: Driver
    tracer_provider: TracerProvider


class Capability(Protocol):
    async def listen(self) -> None:
        """Subscribe to what it serves (before the first heartbeat: a cluster shown online is served)."""
        ...

    async def serve(self) -> None:
        """Serve until cancelled; raising stops the agent."""
        ...

    def reset(self) -> None:
        """After a reconnect (called from a connection hook: must not block)."""
        ...

    async def close(self) -> None:
        """Stop serving; safe twice."""
        ...


def kube_gateway(ctx: Context) -> Capability:
    """Members' kubectl requests for this cluster (a driver without an API server answers them with the reason)."""
    host = getattr(ctx.driver, "gateway_upstream", None)
    return AgentGateway(ctx.connection, ctx.cluster, host, ctx.tracer_provider.get_tracer("tether.agent.gateway"))


CAPABILITIES: tuple[tuple[str, Callable[[Context], Capability]], ...] = (
    ("gateway", kube_gateway),  # the Kubernetes API gateway (agent/gateway*.py)
)
"""Every capability, by name (its task is ``agent-<name>``), in the order they start and the reverse of the
order they stop."""
