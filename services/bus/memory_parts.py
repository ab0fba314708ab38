"""The pieces of ``MemoryBus``: subscriptions, streams with their durable consumers, buckets, endpoints.

Each keeps the rule of its NATS counterpart that services depend on (named in its docstring), nothing more.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from opentelemetry.trace import NoOpTracer, Tracer

from schemas import tracing
from schemas.credentials import agent_inbox_prefix
from schemas.errors import Conflict
from schemas.messages import M, decode, encode
from services.bus.endpoints import PLATFORM_INBOX, agent_caller, answer, reply_allowed
from services.bus.interface import Consumer, Delivery, Endpoint, Endpoints, Handler, Host, Subscription
from services.bus.records import Keep, Latest, Records, View

logger = logging.getLogger(__name__)


def matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, ``>`` one or more at the end."""
    want, have = pattern.split("."), subject.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or token not in ("*", have[i]):
            return False
    return len(want) == len(have)


class MemorySubscription(Subscription):
    """In order, one message at a time, like a nats-py subscription; over ``limit`` waiting, new ones are
    dropped (nats-py's slow consumer)."""

    def __init__(self, subject: str, handler: Handler, limit: int, queue: str) -> None:
        self.subject, self.queue = subject, queue
        self._handler = handler
        self._inbox: asyncio.Queue[Delivery] = asyncio.Queue(maxsize=limit)
        self._worker: asyncio.Task[None] | None = asyncio.create_task(self._work(), name=f"memory-sub {subject}")
        self._dropped = 0

    @property
    def pending(self) -> int:
        return self._inbox.qsize()

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def active(self) -> bool:
        return self._worker is not None

    def offer(self, delivery: Delivery) -> None:
        try:
            self._inbox.put_nowait(delivery)
        except asyncio.QueueFull:
            self._dropped += 1

    async def _work(self) -> None:
        while True:
            delivery = await self._inbox.get()
            try:
                await self._handler(delivery)
            except Exception:
                logger.exception("memory bus: handler of %s failed", self.subject)

    async def stop(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await worker


class Stored:
    __slots__ = ("at", "data", "headers", "seq", "subject")

    def __init__(self, seq: int, subject: str, data: bytes, headers: Mapping[str, str] | None) -> None:
        self.seq, self.subject, self.data, self.headers, self.at = seq, subject, data, headers, time.time()


class MemoryStream:
    """A stream: deduplication by ``Nats-Msg-Id`` within its window, and at most ``per_subject`` messages
    kept per subject (the oldest go)."""

    def __init__(self, name: str, subjects: list[str], window: float, per_subject: int) -> None:
        self.name, self.subjects, self.window, self.per_subject = name, subjects, window or 120.0, per_subject
        self.messages: list[Stored] = []
        self._ids: dict[str, float] = {}
        self._seq = itertools.count(1)
        self.changed = asyncio.Condition()

    def holds(self, subject: str) -> bool:
        return any(matches(p, subject) for p in self.subjects)

    async def store(self, subject: str, data: bytes, headers: Mapping[str, str] | None) -> bool:
        """False when ``Nats-Msg-Id`` was seen within the window (dropped as a duplicate)."""
        now = time.time()
        msg_id = (headers or {}).get("Nats-Msg-Id")
        if msg_id is not None:
            if now - self._ids.get(msg_id, -self.window - 1) <= self.window:
                return False
            self._ids[msg_id] = now
        self.messages.append(Stored(next(self._seq), subject, data, headers))
        if self.per_subject > 0:
            same = [m for m in self.messages if m.subject == subject]
            for old in same[: max(0, len(same) - self.per_subject)]:
                self.messages.remove(old)
        async with self.changed:
            self.changed.notify_all()
        return True

    def purge(self, subject: str) -> int:
        gone = [m for m in self.messages if matches(subject, m.subject)]
        self.messages = [m for m in self.messages if not matches(subject, m.subject)]
        return len(gone)

    @property
    def last_seq(self) -> int:
        return self.messages[-1].seq if self.messages else 0


class DurableState:
    """A durable consumer's place in its stream, kept across ``consume`` calls: acknowledged messages are
    never delivered again, failed ones come back after their delay, until the verdict drops them."""

    def __init__(self, stream: MemoryStream, consumer: Consumer) -> None:
        self.stream, self.consumer = stream, consumer
        self.floor = stream.last_seq if consumer.deliver == "new" else 0
        self.deliveries: dict[int, int] = {}
        self.retry: list[tuple[float, int]] = []
        self.done: set[int] = set()

    def _fresh(self) -> Stored | None:
        for msg in self.stream.messages:
            if msg.seq > self.floor and matches(self.consumer.filter_subject, msg.subject):
                self.floor = msg.seq
                return msg
        return None

    def _due(self) -> Stored | None:
        if not self.retry or self.retry[0][0] > time.monotonic():
            return None
        _, seq = heapq.heappop(self.retry)
        return next((m for m in self.stream.messages if m.seq == seq), None)

    async def next(self) -> Stored:
        while True:
            msg = self._due() or self._fresh()
            if msg is not None:
                self.deliveries[msg.seq] = self.deliveries.get(msg.seq, 0) + 1
                return msg
            wait = max(0.0, self.retry[0][0] - time.monotonic()) if self.retry else None
            async with self.stream.changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stream.changed.wait(), wait)

    def later(self, seq: int, delay: float) -> None:
        heapq.heappush(self.retry, (time.monotonic() + delay, seq))


class MemoryRecords(Records[M]):
    """A bucket: every write bumps the bucket's revision; ``create`` and ``update`` are compare-and-set. A
    deleted or purged key leaves a marker with its own revision (``latest`` and ``write_over`` see it)."""

    def __init__(self, name: str, type_: type[M]) -> None:
        self.name, self.type = name, type_
        self._data: dict[str, tuple[bytes, int]] = {}
        self._markers: dict[str, int] = {}
        self._revision = itertools.count(1)
        self._views: list[MemoryView[M]] = []

    async def get(self, key: str) -> tuple[M, int] | None:
        found = self._data.get(key)
        return (decode(found[0], self.type), found[1]) if found else None

    async def create(self, key: str, value: M) -> int:
        if key in self._data:
            raise Conflict(f"{key!r} already exists")
        return self._write(key, value)

    async def update(self, key: str, value: M, revision: int) -> int:
        if key not in self._data or self._data[key][1] != revision:
            raise Conflict(f"{key!r} changed concurrently")
        return self._write(key, value)

    async def put(self, key: str, value: M) -> int:
        return self._write(key, value)

    async def delete(self, key: str) -> None:
        self._remove(key)

    async def purge(self, key: str) -> None:
        self._remove(key)

    async def latest(self, pattern: str) -> Latest[M] | None:
        newest = self._newest(pattern)
        if newest is None:
            return None
        key, revision = newest
        found = self._data.get(key)
        return Latest(key, decode(found[0], self.type) if found and found[1] == revision else None, revision)

    async def write_over(self, key: str, value: M, guard: str, revision: int) -> int:
        newest = self._newest(guard)
        if (newest[1] if newest else 0) != revision:
            raise Conflict(f"{guard!r} changed concurrently")
        return self._write(key, value)

    async def items(self, timeout: float = 10.0) -> dict[str, M]:
        return {key: decode(data, self.type) for key, (data, _) in self._data.items()}

    async def view(self, keep: Keep[M] | None = None) -> View[M]:
        kept = MemoryView(self, keep)
        for key, (data, revision) in sorted(self._data.items(), key=lambda item: item[1][1]):
            kept.watched(key, revision, lambda data=data: decode(data, self.type))  # type: ignore[misc]
        self._views.append(kept)
        return kept

    def _newest(self, pattern: str) -> tuple[str, int] | None:
        entries = [(k, rev) for k, (_, rev) in self._data.items()] + list(self._markers.items())
        found = [(rev, k) for k, rev in entries if matches(pattern, k)]
        return (max(found)[1], max(found)[0]) if found else None

    def _remove(self, key: str) -> None:
        self._data.pop(key, None)
        revision = self._markers[key] = next(self._revision)  # NATS stores a marker even for a key never written
        for kept in self._views:
            kept.watched(key, revision, lambda: None)

    def _write(self, key: str, value: M) -> int:
        revision = next(self._revision)
        self._data[key] = (encode(value), revision)
        self._markers.pop(key, None)
        for kept in self._views:
            kept.watched(key, revision, lambda: value)
        return revision


class MemoryView(View[M]):
    """Every write of the bucket reaches it as it is made (the watch of one process: there is no other)."""

    def __init__(self, records: MemoryRecords[M], keep: Keep[M] | None) -> None:
        super().__init__(keep)
        self._records = records

    async def stop(self) -> None:
        if self in self._records._views:
            self._records._views.remove(self)


Send = Callable[[str, bytes, Mapping[str, str] | None, str], Awaitable[int]]
Subscribe = Callable[[str, Handler, str], Awaitable[MemorySubscription]]


class MemoryHost(Host):
    """One service's endpoints: the same reply-subject rule and wire errors as ``ServiceHost``."""

    def __init__(self, name: str, send: Send, max_payload: int, tracer: Tracer | None) -> None:
        self.name = name
        self.refused_replies = 0
        self._send, self._max_payload = send, max_payload
        self._tracer = tracer or NoOpTracer()
        self._subs: list[MemorySubscription] = []
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self, endpoints: Endpoints, subscribe: Subscribe) -> None:
        from schemas import subjects

        for item in endpoints.items:
            subject = subjects.agent_calls(item.subject) if item.caller == "agent" else item.subject
            self._subs.append(await subscribe(subject, self._concurrent(item), f"tether-{self.name}"))

    def _concurrent(self, item: Endpoint) -> Handler:
        async def received(delivery: Delivery) -> None:
            task = asyncio.create_task(self._handle(item, delivery))
            self._inflight.add(task)
            task.add_done_callback(self._inflight.discard)

        return received

    async def _handle(self, item: Endpoint, delivery: Delivery) -> None:
        args: tuple[Any, ...] = ()
        prefix = PLATFORM_INBOX
        if item.caller == "agent":
            cluster = agent_caller(item.subject, delivery.subject)
            if cluster is None:
                return
            args, prefix = (cluster,), f"{agent_inbox_prefix(cluster)}."
        reply = delivery.reply
        if not reply_allowed(reply, prefix):
            self.refused_replies += 1
            logger.warning("%s: dropped a request on %s: its reply subject %r", self.name, delivery.subject, reply)
            return

        async def run() -> Any:
            return await item.handler(delivery.decode(item.request_type), *args)

        with self._tracer.start_as_current_span(item.subject, context=tracing.extract(dict(delivery.headers))) as span:
            data, headers = await answer(self.name, item.subject, run, self._max_payload, span)
        await self._send(reply, data, headers, "")

    async def stop(self, timeout: float = 5.0) -> None:
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.stop()
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=timeout)
            for task in pending:
                task.cancel()
