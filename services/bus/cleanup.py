"""Removing what a removed cluster leaves on the bus: its command consumer and its waiting commands."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import subjects

logger = logging.getLogger(__name__)


async def forget_cluster_commands(js: JetStreamContext, cluster: str) -> list[str]:
    """Delete the cluster's durable command consumer and purge its commands; say what was there."""
    stream = subjects.cmd_stream(cluster)
    took = []
    try:
        await js.delete_consumer(stream, subjects.agent_consumer(cluster))
        took.append(f"command consumer {subjects.agent_consumer(cluster)}")
    except NotFoundError:
        pass
    info = await js.stream_info(stream, subjects_filter=subjects.cmd_all(cluster))
    waiting = sum((info.state.subjects or {}).values())
    if waiting:
        await js.purge_stream(stream, subject=subjects.cmd_all(cluster))
        took.append(f"{waiting} undelivered command(s)")
    return took
