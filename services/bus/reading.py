"""Reading a stream's history (audit trail, event history) with a short-lived consumer."""

from __future__ import annotations

from datetime import datetime

from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from schemas.messages import M, decode


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
    try:
        while len(out) < limit:
            try:
                msgs = await sub.fetch(256, timeout=0.5)
            except NatsTimeout:
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
