"""Durable pull consumers that survive reconnects and server restarts.

``pull_subscribe`` ignores the config of an existing durable, so the consumer
is declared with ``add_consumer`` and then bound. A message is acked only after
its handler returns; a retryable failure is nak'ed with a delay; a message that
can never be handled (bad input) is terminated so it does not block the queue.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind, Tracer

from schemas import tracing
from schemas.errors import TetherError
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]


async def consume(
    js: JetStreamContext,
    *,
    stream: str,
    durable: str,
    filter_subject: str,
    handler: Handler,
    batch: int = 64,
    ack_wait: float = 30.0,
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL,
    tracer: Tracer | None = None,
    concurrency: int = 1,
) -> None:
    """Run forever: fetch, handle, ack. Re-declares and re-binds after any bus failure.

    With ``concurrency`` > 1, the messages of one fetched batch are handled up to that many at a time,
    those on the same subject still one after the other, in order (results of one cluster, say).
    """
    failures = 0
    while True:
        try:
            await js.add_consumer(
                stream,
                ConsumerConfig(
                    durable_name=durable,
                    filter_subject=filter_subject,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=ack_wait,
                    max_deliver=-1,
                    deliver_policy=deliver_policy,
                    max_ack_pending=10_000,
                ),
            )
            sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
            failures = 0
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=2)
                except NatsTimeout:
                    continue
                if concurrency <= 1 or len(msgs) == 1:
                    for msg in msgs:
                        await _traced(msg, handler, durable, tracer)
                    continue
                by_subject: dict[str, list[Msg]] = {}
                for msg in msgs:
                    by_subject.setdefault(msg.subject, []).append(msg)
                gate = asyncio.Semaphore(concurrency)

                async def in_order(group: list[Msg], gate: asyncio.Semaphore = gate) -> None:
                    async with gate:
                        for msg in group:
                            await _traced(msg, handler, durable, tracer)

                await asyncio.gather(*(in_order(group) for group in by_subject.values()))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            delay = backoff_delay(failures, base=0.5, cap=10.0)
            failures += 1
            logger.warning("consumer %s: %s; retrying in %.1fs", durable, exc or type(exc).__name__, delay)
            await asyncio.sleep(delay)


async def _traced(msg: Msg, handler: Handler, durable: str, tracer: Tracer | None) -> None:
    if tracer is None:
        await _handle(msg, handler, durable)
        return
    # Continue the trace the message carries (API call -> command -> result -> status).
    with tracer.start_as_current_span(
        f"{durable} {msg.subject}", context=tracing.extract(msg.headers), kind=SpanKind.CONSUMER
    ):
        await _handle(msg, handler, durable)


async def _handle(msg: Msg, handler: Handler, durable: str) -> None:
    try:
        await handler(msg)
    except asyncio.CancelledError:
        raise
    except TetherError as exc:
        if exc.retryable:
            logger.warning("%s: %s on %s; will retry", durable, exc.description, msg.subject)
            await msg.nak(delay=2.0)
            return
        logger.error("%s: dropped message on %s: %s", durable, msg.subject, exc.description)
        await msg.term()
        return
    except Exception:
        logger.exception("%s: failed on %s; will retry", durable, msg.subject)
        await msg.nak(delay=5.0)
        return
    await msg.ack()
