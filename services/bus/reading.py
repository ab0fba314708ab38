"""Reading a stream's history (audit trail, event history) with a short-lived consumer."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import ServiceUnavailableError

from schemas.messages import M, decode
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

UNREACHABLE_FOR = 5.0
"""Seconds a read asks its new consumer again while no server answers for it. On a JetStream cluster the
consumer's leader may live on another node than the reader's, and its interest takes a moment to reach the
reader's node (longer while a lost node's consumers are elected again): a fetch meanwhile answers 503."""


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

    ``keep`` is an optional predicate: only messages it accepts count towards the limit.
    """
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=start,
            ack_policy=AckPolicy.NONE,
            inactive_threshold=30.0,
            mem_storage=True,
        ),
    )
    out: list[M] = []
    give_up = asyncio.get_running_loop().time() + UNREACHABLE_FOR
    try:
        while len(out) < limit:
            msgs = await _next_batch(sub, stream, give_up)
            if msgs is None:
                break
            for msg in msgs:
                item = decode(msg.data, type_)
                if keep is None or keep(item):  # type: ignore[operator]
                    out.append(item)
            if msgs and msgs[-1].metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out[:limit]


async def _next_batch(sub: JetStreamContext.PullSubscription, stream: str, give_up: float) -> list[Msg] | None:
    """The next messages; None when there are none (the fetch timed out); asked again while the consumer is
    unreachable (``UNREACHABLE_FOR``)."""
    unreachable = 0
    while True:
        try:
            return await sub.fetch(256, timeout=0.5)
        except NatsTimeout:
            return None
        except (ServiceUnavailableError, NoRespondersError):
            if asyncio.get_running_loop().time() > give_up:
                raise
            if not unreachable:
                logger.info("reading %s: its consumer does not answer yet; asking again", stream)
            await asyncio.sleep(backoff_delay(unreachable, base=0.1, cap=1.0))
            unreachable += 1
