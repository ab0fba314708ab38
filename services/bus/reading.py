"""Reading a stream's history (audit trail, event history) with a short-lived consumer."""

from __future__ import annotations

import contextlib
import time
import uuid
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas.errors import Unavailable
from schemas.messages import M, decode
from services.bus.patience import busy, until_done

READ_FOR = 10.0
"""Seconds a read may take to get every message its consumer had pending when made. Until then a fetch that
times out, or that no server answers for yet, is asked again: on a JetStream cluster the consumer's leader may
live on another node than the reader's, and its interest takes a moment to reach the reader's node (longer
while a lost node's consumers are elected again); a busy server may be slow. Past it the read fails rather
than return a short history as if it were all."""
FETCH = 0.5
"""Seconds one fetch waits for its batch."""
BATCH = 256


async def read_since(
    js: JetStreamContext,
    stream: str,
    subject: str,
    start: datetime,
    type_: type[M],
    *,
    limit: int = 1000,
    keep: object = None,
) -> list[M]:
    """Messages on ``subject`` stored since ``start``, oldest first, at most ``limit`` kept.

    ``keep`` is an optional predicate: only messages it accepts count towards the limit. The consumer says at
    its creation how many messages it has for the read (``num_pending``): the read ends when it has them all
    (or ``limit`` kept), not at the first fetch that comes back empty.
    """
    name = f"read-{uuid.uuid4().hex}"
    made = await js.add_consumer(
        stream,
        ConsumerConfig(
            name=name,
            filter_subject=subject,
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    try:
        return await _read(js, stream, name, made.num_pending or 0, type_, limit, keep)
    finally:
        # At once rather than after its inactive threshold: a stream's consumers are limited in number.
        with contextlib.suppress(NatsError):
            await js.delete_consumer(stream, name)


async def _read(
    js: JetStreamContext, stream: str, name: str, pending: int, type_: type[M], limit: int, keep: object
) -> list[M]:
    if not pending:
        return []
    sub = await js.pull_subscribe_bind(name, stream=stream)
    out: list[M] = []
    read = 0
    give_up = time.monotonic() + READ_FOR
    try:
        while read < pending and len(out) < limit:
            msgs = await _next_batch(sub, stream, give_up, f"{read} of {pending}")
            read += len(msgs)
            if msgs and msgs[-1].metadata.num_pending == 0:
                read = pending  # nothing more: some were removed since (a stream's age limit)
            for msg in msgs:
                item = decode(msg.data, type_)
                if keep is None or keep(item):  # type: ignore[operator]
                    out.append(item)
    finally:
        await sub.unsubscribe()
    return out[:limit]


async def _next_batch(sub: JetStreamContext.PullSubscription, stream: str, give_up: float, progress: str) -> list[Msg]:
    """The next messages, asked again while the fetch times out or nothing answers for the consumer
    (``patience.busy``), until ``give_up`` (then Unavailable, saying how far the read got)."""
    try:
        return await until_done(
            f"reading {stream} after {progress} messages",
            lambda: sub.fetch(BATCH, timeout=FETCH),
            deadline=give_up - time.monotonic(),
        )
    except Exception as exc:
        if not busy(exc):
            raise
        raise Unavailable(f"reading {stream}: read {progress} messages within {READ_FOR:g}s") from None
