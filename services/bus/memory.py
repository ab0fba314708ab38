"""``Bus`` in one process, no server: for tests of a service's rules (``serve(..., bus=MemoryBus())``).

It keeps the rules of the contract (``tests/bus``): replies only to allowed inboxes, the payload limit,
deduplication, bounded redelivery and poison termination, compare-and-set buckets, reading since a time.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from schemas import subjects, tracing
from schemas.errors import Unavailable
from schemas.messages import M, Message, decode, encode
from services.bus.consuming import MAX_DELIVER, dropped_event, judge
from services.bus.endpoints import remote_error
from services.bus.interface import Bus, Consumer, Delivery, Endpoints, Handler, Host, Subscription
from services.bus.limits import PayloadTooLarge, wire_size
from services.bus.memory_parts import DurableState, MemoryHost, MemoryRecords, MemoryStream, MemorySubscription, matches
from services.bus.records import Records
from services.bus.settings import BusSettings

logger = logging.getLogger(__name__)

DEFAULT_MAX_PAYLOAD = 1024 * 1024
"""nats-server's default ``max_payload``."""


class MemoryBus(Bus):
    def __init__(self, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self._max_payload = max_payload
        self._subs: list[MemorySubscription] = []
        self._streams: dict[str, MemoryStream] = {}
        self._buckets: dict[str, MemoryRecords[Any]] = {}
        self._durables: dict[tuple[str, str], DurableState] = {}
        self._hosts: dict[str, list[MemoryHost]] = {}
        self._agent_consumers: set[str] = set()
        self.account_jwt = ""
        """The last account JWT handed over by ``update_account``."""

    # --- request/reply ------------------------------------------------------------------------------
    async def call(self, subject: str, message: Message, reply_type: type[M], *, timeout: float = 5.0) -> M:
        inbox = f"_INBOX.{uuid.uuid4().hex}"
        answered: asyncio.Future[Delivery] = asyncio.get_running_loop().create_future()

        async def on_reply(delivery: Delivery) -> None:
            if not answered.done():
                answered.set_result(delivery)

        sub = await self.subscribe(inbox, on_reply)
        try:
            if not await self._deliver(subject, encode(message), tracing.inject(), inbox):
                raise Unavailable(f"no service answers on {subject}")
            try:
                reply = await asyncio.wait_for(answered, timeout)
            except TimeoutError:
                raise Unavailable(f"no reply on {subject} within {timeout:g}s") from None
        finally:
            await sub.stop()
        error = remote_error(reply.headers)
        if error is not None:
            raise error
        return decode(reply.data, reply_type)

    async def serve(self, name: str, version: str, endpoints: Endpoints, tracer: Any = None) -> Host:
        host = MemoryHost(name, self._deliver, self._max_payload, tracer)
        await host.start(endpoints, lambda subject, handler, queue: self._subscribe(subject, handler, None, queue))
        self._hosts.setdefault(name, []).append(host)
        return host

    async def ping(self, service: str, *, timeout: float = 1.0) -> bool:
        return any(h._subs for h in self._hosts.get(service, []))

    # --- plain messages -------------------------------------------------------------------------------
    async def send(
        self, subject: str, message: Message | bytes, *, headers: Mapping[str, str] | None = None, reply: str = ""
    ) -> None:
        await self._deliver(subject, message if isinstance(message, bytes) else encode(message), headers, reply)

    async def send_many(self, messages: Sequence[tuple[str, Message]]) -> None:
        for subject, message in messages:
            await self._deliver(subject, encode(message), None, "")

    async def _deliver(self, subject: str, data: bytes, headers: Mapping[str, str] | None, reply: str) -> int:
        """Hand a message to every matching subscription (one per queue group) and store it in its stream;
        the number of subscriptions that got it."""
        size = wire_size(data, dict(headers) if headers else None)
        if size > self._max_payload:
            raise PayloadTooLarge(subject, size, self._max_payload)
        stream = self._stream_of(subject)
        if stream is not None:
            await stream.store(subject, data, headers)
        return self._fan_out(Delivery(subject, data, headers, reply=reply))

    def _fan_out(self, delivery: Delivery) -> int:
        self._subs = [s for s in self._subs if s.active]
        groups: set[str] = set()
        count = 0
        for sub in self._subs:
            if not matches(sub.subject, delivery.subject) or (sub.queue and sub.queue in groups):
                continue
            if sub.queue:
                groups.add(sub.queue)
            sub.offer(delivery)
            count += 1
        return count

    async def subscribe(
        self, subject: str, handler: Handler, *, pending_limit: int | None = None, queue: str = ""
    ) -> Subscription:
        return await self._subscribe(subject, handler, pending_limit, queue)

    async def _subscribe(self, subject: str, handler: Handler, limit: int | None, queue: str) -> MemorySubscription:
        sub = MemorySubscription(subject, handler, limit or 512 * 1024, queue)
        self._subs.append(sub)
        return sub

    # --- streams --------------------------------------------------------------------------------------
    def _stream_of(self, subject: str) -> MemoryStream | None:
        return next((s for s in self._streams.values() if s.holds(subject)), None)

    async def publish(self, subject: str, message: Message, *, msg_id: str | None = None) -> bool:
        stream = self._stream_of(subject)
        if stream is None:
            raise Unavailable(f"no stream holds {subject}")
        data = encode(message)
        headers = tracing.inject({"Nats-Msg-Id": msg_id} if msg_id else None)
        size = wire_size(data, headers)
        if size > self._max_payload:
            raise PayloadTooLarge(subject, size, self._max_payload)
        stored = await stream.store(subject, data, headers)
        self._fan_out(Delivery(subject, data, headers))  # as on NATS: subscribers hear a duplicate too
        return stored

    async def consume(self, consumer: Consumer, handler: Handler) -> None:
        stream = self._streams.get(consumer.stream)
        if stream is None:
            raise Unavailable(f"stream {consumer.stream} does not exist")
        key = (consumer.stream, consumer.durable)
        state = self._durables.setdefault(key, DurableState(stream, consumer))
        while True:
            msg = await state.next()
            delivery = Delivery(
                msg.subject, msg.data, msg.headers, stream_seq=msg.seq, deliveries=state.deliveries[msg.seq]
            )
            await self._handle(state, delivery, handler)

    async def _handle(self, state: DurableState, delivery: Delivery, handler: Handler) -> None:
        consumer = state.consumer
        try:
            await handler(delivery)
        except asyncio.CancelledError:
            state.later(delivery.stream_seq, 0.0)  # never acknowledged: it comes back
            raise
        except Exception as exc:
            verdict = judge(exc, delivery.deliveries, consumer.retry_base)
            name, seq, n = consumer.durable, delivery.stream_seq, delivery.deliveries
            if not verdict.drop:
                logger.warning("%s: %s (delivery %d of %d)", name, verdict.reason, n, MAX_DELIVER)
                state.later(seq, verdict.delay)
                return
            logger.error("%s: dropped message %d on %s: %s", name, seq, delivery.subject, verdict.reason)
            await self.publish(subjects.MESSAGE_DROPPED, dropped_event(name, delivery.subject, seq, n, verdict.reason))

    async def read_since(
        self,
        stream: str,
        subject: str,
        start: datetime,
        type_: type[M],
        *,
        limit: int = 1000,
        keep: Callable[[M], bool] | None = None,
    ) -> list[M]:
        held = self._streams.get(stream)
        since = start.timestamp()
        out: list[M] = []
        for msg in held.messages if held else []:
            if msg.at >= since and matches(subject, msg.subject):
                item = decode(msg.data, type_)
                if keep is None or keep(item):
                    out.append(item)
        return out[:limit]

    # --- declarations ---------------------------------------------------------------------------------
    async def declare_streams(self, *kinds: Literal["platform", "commands"]) -> None:
        from services.bus import streams

        # "commands": retiring earlier versions' command streams, which a memory bus never had.
        configs = streams.platform_streams(1) if "platform" in kinds else []
        for c in configs:
            name = c.name or ""
            if name not in self._streams:
                window, per_subject = c.duplicate_window or 120.0, c.max_msgs_per_subject or 0
                self._streams[name] = MemoryStream(name, list(c.subjects or []), window, per_subject)

    async def bucket(self, name: str, type_: type[M], *, history: int = 1, ttl: float | None = None) -> Records[M]:
        return self._buckets.setdefault(name, MemoryRecords(name, type_))

    async def retired_bucket(self, name: str, type_: type[M]) -> Records[M] | None:
        return self._buckets.get(name)

    async def delete_bucket(self, name: str) -> None:
        self._buckets.pop(name, None)

    # --- each agent's command queue -------------------------------------------------------------------
    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        had = cluster in self._agent_consumers
        self._agent_consumers.add(cluster)
        return not had

    async def stale_agent_consumers(self, *, pause: float = 0.0) -> list[str]:
        return []  # made by this version only: no earlier config to find

    async def delete_agent_consumer(self, cluster: str) -> None:
        self._agent_consumers.discard(cluster)

    async def forget_agent_commands(self, cluster: str) -> list[str]:
        took = (
            [f"desired-state consumer {subjects.agent_consumer(cluster)}"] if cluster in self._agent_consumers else []
        )
        self._agent_consumers.discard(cluster)
        return took

    async def update_account(self, account_jwt: str) -> None:
        self.account_jwt = account_jwt

    async def held_account(self, account_pub: str) -> str | None:
        return self.account_jwt or None

    # --- the connection -------------------------------------------------------------------------------
    async def another(self, settings: BusSettings, name: str) -> Bus:
        return self

    async def round_trip(self, timeout: float) -> None:
        return None  # nothing in flight: what was sent is already delivered

    @property
    def connected(self) -> bool:
        return True

    @property
    def reconnects(self) -> int:
        return 0

    @property
    def max_payload(self) -> int:
        return self._max_payload

    async def close(self) -> None:
        """Nothing to drain: the state outlives a service run on it (another may start on the same bus)."""
