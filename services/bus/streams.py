"""Declaring the platform's streams and buckets, idempotently, at service start."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadBucketError, NotFoundError
from nats.js.kv import KeyValue

from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import M
from schemas.names import dns1123_label_error
from services.bus import limits, patience
from services.bus.kv import Bucket

logger = logging.getLogger(__name__)

DAY = 24 * 3600.0
STREAM_NOT_FOUND = 10059
"""JetStream's error code for a missing stream (a missing consumer is 10014)."""
STREAM_NAME_IN_USE = 10058
"""JetStream's error when a stream was created concurrently (by another replica) with another config."""
STORE_FAILED = 10049
"""JetStream's "error creating store for stream": seen when several services created the same stream at the
same moment (CI, the test rig's five services starting at once); the next look finds the stream made."""

T = TypeVar("T")


def _passing(exc: Exception) -> bool:
    """Errors that pass on a JetStream cluster: the server is busy, the meta leader is being elected, two
    services declared the same stream at once (the server answers only one of them; another times out or is
    told the store could not be made), or a stream just made is not found yet (the next try looks again, and
    creates it if it really is missing)."""
    return patience.busy(exc) or (
        isinstance(exc, APIError) and exc.err_code in (STREAM_NAME_IN_USE, STORE_FAILED, STREAM_NOT_FOUND)
    )


async def _declare(what: str, step: Callable[[], Awaitable[T]]) -> T:
    """``step``, tried again through what passes, for as long as the start's patience lasts."""
    return await patience.until_done(f"declaring {what}", step, passing=_passing)


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
            max_bytes=limits.EVENTS_MAX_BYTES,
            max_msg_size=limits.STREAM_MAX_MSG,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.AUDIT_STREAM,
            description="Audit trail: every mutating API call and every command sent to an agent",
            subjects=[subjects.AUDIT_ANY],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=90 * DAY,
            num_replicas=replicas,
            max_bytes=limits.AUDIT_MAX_BYTES,
            max_msg_size=limits.STREAM_MAX_MSG,
            discard=DiscardPolicy.OLD,
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
            # Written by agents: bounded in total, per message and per cluster's subject.
            max_bytes=limits.EVT_MAX_BYTES,
            max_msg_size=limits.STREAM_MAX_MSG,
            max_msgs_per_subject=limits.EVT_MAX_PER_SUBJECT,
            discard=DiscardPolicy.OLD,
        ),
    ]


AGENT_CONSUMERS_MAX = 1_000_000
"""Durable consumers the desired-state stream allows: one per connected cluster (nats-server 2.15 defaults to
1,000 per stream: agent 1,001 would be refused its consumer)."""


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    """Create the stream, or bring an existing one's config up to date.

    Retried through what passes on a cluster (every replica of every service declares the same streams
    at start); an existing stream whose config already matches is left alone.
    """

    async def step() -> None:
        try:
            info = await js.stream_info(config.name or "")
        except NotFoundError:
            await js.add_stream(config)
            logger.info("created stream %s", config.name)
            return
        if _differs(config, info.config):
            await js.update_stream(config)

    await _declare(f"stream {config.name}", step)


async def retire_cmd_streams(js: JetStreamContext) -> None:
    """Delete the command streams of earlier versions (``RETIRED_CMD_STREAMS``), with their agents' consumers.

    What they still hold is not lost: each command was a copy of a desired-state record, and an agent's new
    consumer on the desired state starts with the last record of each of its cluster's objects (anything
    not applied yet is applied from it; an orphan's deletion is asked again by the next inventory)."""

    async def retire(name: str) -> None:
        try:
            info = await js.stream_info(name)
        except NotFoundError:
            return
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(name)
            logger.warning(
                "deleted the command stream %s of an earlier version (%d commands: the desired state has them)",
                name,
                info.state.messages,
            )

    # At once, and retried like a declaration: a restarted platform's lifecycle asks while the server is busy
    # with the fleet's reconnects (17 looks one after another, and one timeout ended its start).
    await asyncio.gather(
        *(
            _declare(f"stream {name} (retired)", functools.partial(retire, name))
            for name in subjects.RETIRED_CMD_STREAMS
        )
    )


async def retire_results_consumer(js: JetStreamContext) -> None:
    """Delete lifecycle's consumer of agents' results on EVT of earlier versions: agents ask lifecycle to
    record their results now. Nothing is lost with what it still holds: a record not observed at its
    generation is delivered to its agent again, which finds it applied and asks for the result's record."""

    async def retire() -> None:
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(subjects.EVT_STREAM, subjects.RETIRED_RESULTS_CONSUMER)
            logger.warning("deleted the results consumer %s of an earlier version", subjects.RETIRED_RESULTS_CONSUMER)

    await _declare(f"consumer {subjects.RETIRED_RESULTS_CONSUMER} (retired)", retire)


def _differs(want: StreamConfig, have: StreamConfig) -> bool:
    """True when a field ``want`` sets differs from the stream's (unsure representations count as different).

    Zero values are left to the server's defaults, so they never count."""
    current = have.as_dict()
    return any(
        name != "name" and value not in (None, 0) and current.get(name) != value
        for name, value in want.as_dict().items()
    )


async def ensure_platform_streams(js: JetStreamContext, replicas: int) -> None:
    # At once, not one after another: each waits on a server that may be busy (a restart's reconnects).
    await asyncio.gather(*(ensure_stream(js, config) for config in platform_streams(replicas)))


async def ensure_bucket(
    js: JetStreamContext,
    name: str,
    type_: type[M],
    *,
    replicas: int,
    history: int = 1,
    ttl: float | None = None,
) -> Bucket[M]:
    """Open the bucket, creating it on first use (retried like ``ensure_stream``).

    On a single server, reads are direct gets: they bypass the JetStream API queue, which thousands of agents
    declaring their command consumers (after a restart, say) keep busy for seconds. With replicas, a direct
    get may be answered by a follower that lags, so there reads stay with the leader.
    """
    direct = replicas == 1
    max_bytes = limits.BUCKET_MAX_BYTES_OF.get(name, limits.BUCKET_MAX_BYTES)
    # The desired state's stream carries one durable consumer per agent.
    max_consumers = AGENT_CONSUMERS_MAX if name in subjects.DESIRED_BUCKETS else None

    stream = f"KV_{name}"

    async def step() -> KeyValue:
        # One stream info where a bucket exists (js.key_value would ask for it once more): a restarted
        # platform's services declare theirs while the server is busy with the fleet's reconnects.
        try:
            config = (await js.stream_info(stream)).config
        except NotFoundError:
            await js.create_key_value(
                KeyValueConfig(
                    bucket=name,
                    history=history,
                    replicas=replicas,
                    ttl=ttl,
                    storage=StorageType.FILE,
                    direct=direct,
                    max_bytes=max_bytes,
                    max_value_size=limits.STREAM_MAX_MSG,
                )
            )
            logger.info("created bucket %s", name)
            config = (await js.stream_info(stream)).config
        if (
            (direct and not config.allow_direct)
            or config.max_bytes != max_bytes
            or (max_consumers and config.max_consumers != max_consumers)
        ):
            # A bucket of an earlier version (direct gets, the size limits), or one just created (KV configs
            # have no consumer limit).
            config.allow_direct = config.allow_direct or direct
            config.max_bytes, config.max_msg_size = max_bytes, limits.STREAM_MAX_MSG
            config.max_consumers = max_consumers or config.max_consumers
            await js.update_stream(config)
        if (config.max_msgs_per_subject or 0) < 1:
            raise BadBucketError(description=f"stream {stream} is not a key-value bucket", stream=stream)
        return KeyValue(name=name, stream=stream, pre=f"$KV.{name}.", js=js, direct=bool(config.allow_direct))

    return Bucket(await _declare(f"bucket {name}", step), type_)


async def open_retired_bucket(js: JetStreamContext, name: str, type_: type[M]) -> Bucket[M] | None:
    """Bucket ``name`` of an earlier version, if it still exists (its records are to be moved), else None."""

    async def step() -> KeyValue | None:
        try:
            config = (await js.stream_info(f"KV_{name}")).config
        except NotFoundError:
            return None
        return KeyValue(name=name, stream=f"KV_{name}", pre=f"$KV.{name}.", js=js, direct=bool(config.allow_direct))

    kv = await _declare(f"bucket {name} (retired)", step)
    return Bucket(kv, type_) if kv is not None else None


async def delete_bucket(js: JetStreamContext, name: str) -> None:
    """Delete bucket ``name`` of an earlier version, with its history and consumers (nothing if it is gone)."""

    async def step() -> None:
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(f"KV_{name}")
            logger.warning("deleted the bucket %s of an earlier version", name)

    await _declare(f"bucket {name} (retired)", step)


# --- each agent's consumer of its cluster's desired state: created by the platform, only read by the agent ---
AGENT_ACK_WAIT = 30.0
"""Seconds the server waits for an agent's acknowledgement before delivering a record again."""


def agent_consumer_config(cluster: str) -> ConsumerConfig:
    """The durable consumer one cluster's agent follows its desired state with: the records of its own
    cluster's objects (``desired_records``), starting from the last record of each (a new consumer is a full
    resync), then every write in order, one unacknowledged at a time. The agent's JWT may read it, fetch and
    ack, nothing else: it cannot create, change or delete a consumer, so it cannot re-filter one onto another
    cluster's records or squat a name.

    What it costs nats-server (2.15): each consumer finds its next record by walking the stream from its last
    delivery, copying every record's subject to match it, so a command costs about as many copies as its
    bucket was written since that cluster's previous one (one bucket for 1,000 clusters: 70-85 % of
    nats-server's allocations, so most of its collections, and ~0.5 ms of its CPU per command; hence the
    ``DESIRED_SHARDS`` buckets, which cut the walk to a sixteenth). Nothing in this config avoids the walk: the
    per-subject index cannot shorten it while the bucket keeps ``DESIRED_HISTORY`` records per object (it
    knows each subject's first and last record in a block only, and the object's earlier records lie before
    the consumer's position), a ``<cluster>.>`` filter is the same walk, and two filters (nats-server's other
    search) need a create subject without the filter, which the registry's grant could then not pin to one
    cluster. The copy is nats-server's to drop (a compare in place).

    Its state (what was delivered, what acknowledged) is kept in memory (``mem_storage``), not in a file: with
    ``sync_interval: always`` nats-server writes a file consumer's state after each delivery and each
    acknowledgement as a new file, fsynced, renamed and its directory fsynced, and at 229 commands/s (1,000
    agents) those writes were 36 % of nats-server's CPU (``perf``), a command's delivery and acknowledgement
    one each, never coalesced (each cluster gets a command every few seconds). Nothing depends on that state
    surviving: a record delivered again is one the agent already applied (``agent.commands``: acknowledged
    only), and a consumer lost with a whole server's restart is made again at the agent's next hello,
    starting from the last record of each object, as a new one always does. The records themselves (the
    commands) stay fsynced before anyone is told they are written."""
    name = subjects.agent_consumer(cluster)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"desired state for the agent of cluster {cluster}",
        filter_subject=subjects.desired_records(cluster),
        deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=AGENT_ACK_WAIT,
        max_ack_pending=1,
        max_deliver=-1,
        mem_storage=True,
    )


_AGENT_CONSUMER_FIELDS = (
    "filter_subject",
    "deliver_policy",
    "ack_policy",
    "ack_wait",
    "max_ack_pending",
    "mem_storage",  # an earlier version's file-backed consumer is made again once (a resync)
)


async def ensure_agent_consumer(
    js: JetStreamContext, cluster: str, *, timeout: float = 30.0, look_up: bool = True
) -> bool:
    """Create (or put right) one agent's consumer; True when it had to. Not looked up with ``look_up=False``
    (the caller knows it is new: asking first would only cost a request)."""
    want = agent_consumer_config(cluster)
    stream = subjects.desired_stream(cluster)
    if not look_up:
        try:
            await _create_agent_consumer(js, stream, want, timeout)
        except NotFoundError:
            raise
        except APIError as exc:
            # One there with another config (an earlier version's): looked up and made again below.
            logger.info("consumer %s on %s: %s; looking it up", want.durable_name, stream, exc.description)
        else:
            return True
    try:
        info = await js.consumer_info(stream, want.durable_name or "", timeout=timeout)
    except NotFoundError as exc:
        if exc.err_code == STREAM_NOT_FOUND:
            raise Unavailable(f"stream {stream} does not exist yet (the lifecycle service creates it)") from None
    else:
        if _same_config(info.config, want):
            return False
        # Changing a durable's filter or deliver policy is refused: make it again (a new one starts from
        # the last record of each object, so nothing is missed).
        logger.warning("consumer %s on %s had another config; making it again", want.durable_name, stream)
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(stream, want.durable_name or "")
    await _create_agent_consumer(js, stream, want, timeout)
    return True


LIST_PAGE = 256
"""Consumers nats-server returns per ``CONSUMER.LIST`` page (its ``JSApiListLimit``)."""


async def stale_agent_consumers(js: JetStreamContext, *, pause: float = 0.0) -> list[str]:
    """The clusters whose agent consumer is not of this version's config, found by listing each desired-state
    stream's consumers (``LIST_PAGE`` to a request, ``pause`` seconds between requests): 10,000 clusters cost
    ~48 requests instead of a look-up each. Consumers not named for their own stream's cluster (lifecycle's
    views', an operator's) are not agents' and are left alone."""
    stale: list[str] = []
    for stream in subjects.DESIRED_STREAMS:
        offset = 0
        while True:
            try:
                page = await js.consumers_info(stream, offset=offset)
            except NotFoundError as exc:
                if exc.err_code == STREAM_NOT_FOUND:
                    break  # no bucket yet: no consumer either
                raise
            stale.extend(cluster for c in page if (cluster := _stale_cluster(stream, c.name, c.config)))
            offset += len(page)
            await asyncio.sleep(pause)
            if len(page) < LIST_PAGE:
                break
    return stale


def _stale_cluster(stream: str, name: str | None, have: ConsumerConfig) -> str | None:
    """The cluster of an agent's consumer (named for a cluster whose records live in ``stream``) of another
    config; None for anything else."""
    if not name or not name.startswith(subjects.AGENT_CONSUMER_PREFIX):
        return None
    cluster = name.removeprefix(subjects.AGENT_CONSUMER_PREFIX)
    if dns1123_label_error(cluster) or subjects.desired_stream(cluster) != stream:
        return None
    return None if _same_config(have, agent_consumer_config(cluster)) else cluster


def _same_config(have: ConsumerConfig, want: ConsumerConfig) -> bool:
    return all(getattr(have, f) == getattr(want, f) for f in _AGENT_CONSUMER_FIELDS)


async def _create_agent_consumer(js: JetStreamContext, stream: str, want: ConsumerConfig, timeout: float) -> None:
    try:
        await js.add_consumer(stream, want, timeout=timeout)
    except NotFoundError as exc:
        if exc.err_code == STREAM_NOT_FOUND:
            raise Unavailable(f"stream {stream} does not exist yet (the lifecycle service creates it)") from None
        raise


async def delete_agent_consumer(js: JetStreamContext, cluster: str) -> None:
    """Remove a disconnected cluster's consumer (its records stay: a new consumer starts from them)."""
    with contextlib.suppress(NotFoundError):
        await js.delete_consumer(subjects.desired_stream(cluster), subjects.agent_consumer(cluster))
