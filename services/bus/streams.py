"""Declaring the platform's streams and buckets, idempotently, at service start."""

from __future__ import annotations

import logging

from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BucketNotFoundError, NotFoundError

from schemas import subjects
from schemas.messages import M
from services.bus.kv import Bucket

logger = logging.getLogger(__name__)

DAY = 24 * 3600.0


def platform_streams(replicas: int) -> list[StreamConfig]:
    return [
        StreamConfig(
            name=subjects.EVENTS_STREAM,
            description="Public platform events (tether.events.>), kept for replay by outside consumers",
            subjects=[subjects.PUBLIC_EVENTS_ANY],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            num_replicas=replicas,
            duplicate_window=120.0,
        ),
        StreamConfig(
            name=subjects.AUDIT_STREAM,
            description="Audit trail: every mutating API call and every command sent to an agent",
            subjects=[subjects.AUDIT_ANY],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=90 * DAY,
            num_replicas=replicas,
        ),
        StreamConfig(
            name=subjects.EVT_STREAM,
            description="Results, status and inventory reported by agents",
            subjects=[subjects.EVT_ANY],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            num_replicas=replicas,
            duplicate_window=120.0,
        ),
    ]


def cmd_stream(replicas: int) -> StreamConfig:
    """Commands to agents: a work queue, one durable consumer per agent filtered on its cluster."""
    return StreamConfig(
        name=subjects.CMD_STREAM,
        description="Commands to agents; one durable consumer per agent, filtered on its cluster",
        subjects=[subjects.CMD_ANY],
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=24 * 3600.0,
        max_consumers=-1,
    )


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one's config up to date."""
    try:
        await js.stream_info(config.name or "")
    except NotFoundError:
        await js.add_stream(config)
        logger.info("created stream %s", config.name)
        return
    await js.update_stream(config)


async def ensure_platform_streams(js: JetStreamContext, replicas: int) -> None:
    for config in platform_streams(replicas):
        await ensure_stream(js, config)


async def ensure_bucket(
    js: JetStreamContext,
    name: str,
    type_: type[M],
    *,
    replicas: int,
    history: int = 1,
    ttl: float | None = None,
) -> Bucket[M]:
    """Open the bucket, creating it on first use."""
    try:
        kv = await js.key_value(name)
    except BucketNotFoundError:
        kv = await js.create_key_value(
            KeyValueConfig(bucket=name, history=history, replicas=replicas, ttl=ttl, storage=StorageType.FILE)
        )
        logger.info("created bucket %s", name)
    return Bucket(kv, type_)
