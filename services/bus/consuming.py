"""Durable pull consumers that survive reconnects and server restarts.

``pull_subscribe`` ignores the config of an existing durable, so the consumer
is declared with ``add_consumer`` and then bound. A message is acked only after
its handler returns; a retryable failure is nak'ed with a delay; a message that
can never be handled (bad input) is terminated so it does not block the queue.
"""

from __future__ import annotations

import asyncio
import functools
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

    With ``concurrency`` > 1, messages are handled up to that many at a time, those on the same subject
    still one after the other, in order (results of one cluster, say), while the next ones are fetched.
    """
    failures = 0
    pipeline = _Pipeline(concurrency)
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
                if concurrency <= 1:
                    for msg in msgs:
                        await _traced(msg, handler, durable, tracer)
                    continue
                for msg in msgs:
                    pipeline.add(msg, _traced(msg, handler, durable, tracer))
                # Fetch on while these are handled (a batch no longer waits for its slowest message), with
                # at most two batches' worth in hand (each must be handled within the ack wait).
                await pipeline.below(2 * max(batch, concurrency))
        except asyncio.CancelledError:
            pipeline.cancel()
            raise
        except Exception as exc:
            delay = backoff_delay(failures, base=0.5, cap=10.0)
            failures += 1
            logger.warning("consumer %s: %s; retrying in %.1fs", durable, exc or type(exc).__name__, delay)
            await asyncio.sleep(delay)


class _Pipeline:
    """Messages handled side by side, those on one subject one after the other in arrival order."""

    def __init__(self, concurrency: int) -> None:
        self._gate = asyncio.Semaphore(concurrency)
        self._last: dict[str, asyncio.Task[None]] = {}
        self._running: set[asyncio.Task[None]] = set()

    def add(self, msg: Msg, handle: Awaitable[None]) -> None:
        task = asyncio.create_task(self._after(self._last.get(msg.subject), handle))
        self._last[msg.subject] = task
        self._running.add(task)
        task.add_done_callback(functools.partial(self._done, msg.subject))

    def cancel(self) -> None:
        for task in self._running:
            task.cancel()

    def _done(self, subject: str, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if self._last.get(subject) is task:
            del self._last[subject]

    async def _after(self, previous: asyncio.Task[None] | None, handle: Awaitable[None]) -> None:
        if previous is not None:
            await asyncio.wait({previous})  # its outcome is its own (handled, nak'ed or logged)
        async with self._gate:
            await handle

    async def below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` messages are being handled."""
        while len(self._running) >= limit:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)


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
