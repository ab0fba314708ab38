"""Removing what a removed cluster leaves on the bus: its agent's consumer of the desired state."""

from __future__ import annotations

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import subjects


async def forget_cluster_commands(js: JetStreamContext, cluster: str) -> list[str]:
    """Delete the cluster's durable consumer; say what was there. Its records are lifecycle's (a removal is
    refused while it holds live ones, and its deletions become tombstones)."""
    try:
        await js.delete_consumer(subjects.desired_stream(cluster), subjects.agent_consumer(cluster))
    except NotFoundError:
        return []
    return [f"desired-state consumer {subjects.agent_consumer(cluster)}"]
