"""Durable pull consumers that survive reconnects and server restarts.

``pull_subscribe`` ignores the config of an existing durable, so the consumer
is declared with ``add_consumer`` and then bound. A message is acked only after
its handler returns; a retryable failure is nak'ed with a delay; a message that
can never be handled (bad input, too large to pass on) is terminated so it does
not block the queue. So is one that failed ``MAX_DELIVER`` times (a poison
message), with a log line and a ``message.dropped`` event; the server stops
redelivering one more time after that, should the handler never return (a crash
at every attempt).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import MaxPayloadError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from opentelemetry.trace import SpanKind, Tracer

from schemas import subjects, tracing
from schemas.errors import TetherError, describe
from schemas.messages import MessageDropped, encode
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

Handler = Callable[[Msg], Awaitable[None]]

MAX_DELIVER = 8
"""Deliveries of one message before it is terminated as poison (failures back off in between, up to 30 s: a
few minutes of trying)."""


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
    retry_base: float | None = None,
) -> None:
    """Run forever: fetch, handle, ack. Re-declares and re-binds after any bus failure.

    With ``concurrency`` > 1, messages are handled up to that many at a time, those on the same subject
    still one after the other, in order (results of one cluster, say), while the next ones are fetched.
    ``retry_base`` overrides the first redelivery delay of a failed message (it doubles with each one).
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
                    max_deliver=MAX_DELIVER + 1,
                    deliver_policy=deliver_policy,
                    max_ack_pending=10_000,
                ),
            )
            sub = await js.pull_subscribe_bind(durable=durable, stream=stream)
            failures = 0
            while True:
                try:
                    msgs = await sub.fetch(batch, timeout=2)
                except TimeoutError:
                    # Nothing came: nats-py's TimeoutError, or asyncio's bare one when the fetch's deadline ran
                    # out before its second pull (nats-py 2.16). Not a failure: a busy server's fetches did
                    # that, and each was logged, backed off and its consumer declared again.
                    continue
                if concurrency <= 1:
                    for msg in msgs:
                        await _traced(js, msg, handler, durable, tracer, retry_base)
                    continue
                for msg in msgs:
                    pipeline.add(msg, _traced(js, msg, handler, durable, tracer, retry_base))
                # Fetch on while these are handled (a batch no longer waits for its slowest message), with
                # at most two batches' worth in hand (each must be handled within the ack wait).
                await pipeline.below(2 * max(batch, concurrency))
        except asyncio.CancelledError:
            pipeline.cancel()
            raise
        except Exception as exc:
            delay = backoff_delay(failures, base=0.5, cap=10.0)
            failures += 1
            logger.warning("consumer %s: %s; retrying in %.1fs", durable, describe(exc), delay)
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


async def _traced(
    js: JetStreamContext, msg: Msg, handler: Handler, durable: str, tracer: Tracer | None, retry_base: float | None
) -> None:
    if tracer is None:
        await _handle(js, msg, handler, durable, retry_base)
        return
    # Continue the trace the message carries (API call -> command -> result -> status).
    with tracer.start_as_current_span(
        f"{durable} {msg.subject}", context=tracing.extract(msg.headers), kind=SpanKind.CONSUMER
    ):
        await _handle(js, msg, handler, durable, retry_base)


def _deliveries(msg: Msg) -> int:
    try:
        return int(msg.metadata.num_delivered)
    except Exception:  # not a JetStream message: no metadata
        return 1


@dataclass(frozen=True)
class Verdict:
    """What becomes of a message whose handler failed: dropped (terminated) or retried after ``delay``."""

    drop: bool
    reason: str
    delay: float = 0.0


def judge(exc: Exception, deliveries: int, retry_base: float | None = None) -> Verdict:
    """The rule every consumer applies to a failure, on any bus: a message that can never be handled is
    dropped at once, one that keeps failing after ``MAX_DELIVER`` deliveries too, anything else retried."""
    if isinstance(exc, TetherError) and not exc.retryable:
        return Verdict(True, exc.description)
    if isinstance(exc, MaxPayloadError):
        return Verdict(True, f"its follow-up write is too large: {exc}")
    reason = exc.description if isinstance(exc, TetherError) else repr(exc)
    if deliveries >= MAX_DELIVER:
        return Verdict(True, f"failed {deliveries} times, last: {reason}")
    default = 2.0 if isinstance(exc, TetherError) else 5.0
    return Verdict(False, reason, retry_base or default)


def dropped_event(durable: str, subject: str, seq: int, deliveries: int, reason: str) -> MessageDropped:
    return MessageDropped(
        consumer=durable, subject=subject, stream_seq=seq, deliveries=deliveries, reason=reason[:1024], at=time.time()
    )


async def _handle(
    js: JetStreamContext, msg: Msg, handler: Handler, durable: str, retry_base: float | None = None
) -> None:
    try:
        await handler(msg)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if not isinstance(exc, TetherError | MaxPayloadError):
            logger.exception("%s: failed on %s", durable, msg.subject)
        verdict = judge(exc, _deliveries(msg), retry_base)
    else:
        await msg.ack()
        return
    if verdict.drop:
        await _drop(js, msg, durable, verdict.reason)
        return
    n = _deliveries(msg)
    logger.warning("%s: %s on %s (delivery %d of %d); will retry", durable, verdict.reason, msg.subject, n, MAX_DELIVER)
    await msg.nak(delay=verdict.delay)


async def _drop(js: JetStreamContext, msg: Msg, durable: str, reason: str) -> None:
    """Terminate ``msg`` (never redelivered), say so in the log and as a public event."""
    deliveries = _deliveries(msg)
    try:
        seq = int(msg.metadata.sequence.stream)
    except Exception:
        seq = 0
    logger.error("%s: dropped message %d on %s: %s", durable, seq, msg.subject, reason)
    await msg.term()
    event = dropped_event(durable, msg.subject, seq, deliveries, reason)
    try:
        await js.publish(subjects.MESSAGE_DROPPED, encode(event), timeout=5)
    except (NatsError, TimeoutError) as exc:
        logger.warning("%s: the message.dropped event was not published: %s", durable, describe(exc))
