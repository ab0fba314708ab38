"""``Bus`` on a real nats-server: the one place a service's calls turn into nats-py's."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from nats.aio.msg import Msg
from nats.aio.subscription import (
    DEFAULT_SUB_PENDING_BYTES_LIMIT,
    DEFAULT_SUB_PENDING_MSGS_LIMIT,
)
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError
from nats.js.api import DeliverPolicy
from opentelemetry.trace import NoOpTracer

from schemas.errors import Unavailable, describe
from schemas.messages import M, Message, encode
from services.bus import cleanup, consuming, endpoints, publishing, reading, streams
from services.bus.connection import close, connect
from services.bus.interface import Bus, Consumer, Delivery, Endpoints, Handler, Host, Subscription
from services.bus.limits import GuardedClient, MiB
from services.bus.records import Records
from services.bus.settings import BusSettings

CLAIMS_UPDATE = "$SYS.REQ.CLAIMS.UPDATE"
"""Where the system account takes an account JWT (nats-server's account resolver)."""
CLAIMS_LOOKUP = "$SYS.REQ.ACCOUNT.{account}.CLAIMS.LOOKUP"
"""Where the system account asks for the account JWT the server holds (nats-server's account resolver)."""


def _stream_delivery(msg: Msg) -> Delivery:
    try:
        meta = msg.metadata
        seq, deliveries, pending = int(meta.sequence.stream), int(meta.num_delivered), int(meta.num_pending)
    except Exception:  # not a JetStream message: no metadata
        seq, deliveries, pending = 0, 1, 0
    return Delivery(
        msg.subject,
        msg.data,
        msg.headers,
        stream_seq=seq,
        deliveries=deliveries,
        pending=pending,
        progress=msg.in_progress if msg.reply else None,
    )


class _Subscription(Subscription):
    def __init__(self, sub: NatsSubscription, dropped: Callable[[], int]) -> None:
        self._sub: NatsSubscription | None = sub
        self._dropped = dropped

    @property
    def pending(self) -> int:
        return self._sub.pending_msgs if self._sub is not None else 0

    @property
    def dropped(self) -> int:
        return self._dropped()

    async def stop(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            try:
                await sub.unsubscribe()
            except Exception:  # the connection is gone: so is the subscription
                pass


class NatsBus(Bus):
    """A service's connection to nats-server (see ``connection.connect`` for reconnects and a lost link)."""

    def __init__(self, nc: GuardedClient, settings: BusSettings) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._settings = settings

    @classmethod
    async def connect(cls, settings: BusSettings, name: str) -> NatsBus:
        """Connect as service ``name``; the first connect retries until it succeeds."""
        nc = await connect(settings, name)
        assert isinstance(nc, GuardedClient)
        return cls(nc, settings)

    # --- request/reply ------------------------------------------------------------------------------
    async def call(self, subject: str, message: Message, reply_type: type[M], *, timeout: float = 5.0) -> M:
        return await endpoints.call(self._nc, subject, message, reply_type, timeout=timeout)

    async def serve(self, name: str, version: str, served: Endpoints, tracer: Any = None) -> Host:
        host = endpoints.ServiceHost(self._nc, name, version, tracer or NoOpTracer())
        host.add(served)
        await host.start()
        return host

    async def ping(self, service: str, *, timeout: float = 1.0) -> bool:
        return await endpoints.ping(self._nc, service, timeout=timeout)

    # --- plain messages -------------------------------------------------------------------------------
    async def send(
        self, subject: str, message: Message | bytes, *, headers: Mapping[str, str] | None = None, reply: str = ""
    ) -> None:
        data = message if isinstance(message, bytes) else encode(message)
        await self._nc.publish(subject, data, reply, dict(headers) if headers else None)
        await self._nc.flush()

    async def send_many(self, messages: Sequence[tuple[str, Message]]) -> None:
        for subject, message in messages:
            await self._nc.publish(subject, encode(message))
        await self._nc.flush()

    async def subscribe(
        self, subject: str, handler: Handler, *, pending_limit: int | None = None, queue: str = ""
    ) -> Subscription:
        async def received(msg: Msg) -> None:
            await handler(Delivery(msg.subject, msg.data, msg.headers, reply=msg.reply))

        sub = await self._nc.subscribe(
            subject,
            queue=queue,
            cb=received,
            pending_msgs_limit=pending_limit or DEFAULT_SUB_PENDING_MSGS_LIMIT,
            pending_bytes_limit=256 * MiB if pending_limit else DEFAULT_SUB_PENDING_BYTES_LIMIT,
        )
        counts, sid = self._nc.dropped, sub._id
        return _Subscription(sub, lambda: counts[sid])

    # --- streams --------------------------------------------------------------------------------------
    async def publish(self, subject: str, message: Message, *, msg_id: str | None = None) -> bool:
        return await publishing.publish(self._js, subject, message, msg_id=msg_id)

    async def consume(self, consumer: Consumer, handler: Handler) -> None:
        async def handle(msg: Msg) -> None:
            await handler(_stream_delivery(msg))

        await consuming.consume(
            self._js,
            stream=consumer.stream,
            durable=consumer.durable,
            filter_subject=consumer.filter_subject,
            handler=handle,
            batch=consumer.batch,
            ack_wait=consumer.ack_wait,
            deliver_policy=DeliverPolicy.NEW if consumer.deliver == "new" else DeliverPolicy.ALL,
            tracer=consumer.tracer,
            concurrency=consumer.concurrency,
            retry_base=consumer.retry_base,
        )

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
        return await reading.read_since(self._js, stream, subject, start, type_, limit=limit, keep=keep)

    # --- declarations ---------------------------------------------------------------------------------
    async def declare_streams(self, *kinds: Literal["platform", "commands"]) -> None:
        steps = []
        if "platform" in kinds:
            steps.append(streams.ensure_platform_streams(self._js, self._settings.replicas))
        if "commands" in kinds:
            steps += [streams.retire_cmd_streams(self._js), streams.retire_results_consumer(self._js)]
        await asyncio.gather(*steps)  # at once: each waits on a server that may be busy (a restart's reconnects)

    async def bucket(self, name: str, type_: type[M], *, history: int = 1, ttl: float | None = None) -> Records[M]:
        return await streams.ensure_bucket(
            self._js, name, type_, replicas=self._settings.replicas, history=history, ttl=ttl
        )

    async def retired_bucket(self, name: str, type_: type[M]) -> Records[M] | None:
        return await streams.open_retired_bucket(self._js, name, type_)

    async def delete_bucket(self, name: str) -> None:
        await streams.delete_bucket(self._js, name)

    # --- each agent's command queue -------------------------------------------------------------------
    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        return await streams.ensure_agent_consumer(self._js, cluster, look_up=look_up)

    async def stale_agent_consumers(self, *, pause: float = 0.0) -> list[str]:
        return await streams.stale_agent_consumers(self._js, pause=pause)

    async def delete_agent_consumer(self, cluster: str) -> None:
        await streams.delete_agent_consumer(self._js, cluster)

    async def forget_agent_commands(self, cluster: str) -> list[str]:
        return await cleanup.forget_cluster_commands(self._js, cluster)

    async def update_account(self, account_jwt: str) -> None:
        reply = await self._nc.request(CLAIMS_UPDATE, account_jwt.encode(), timeout=5)
        answer = json.loads(reply.data or b"{}")
        if answer.get("error"):
            raise Unavailable(f"NATS refused the account update: {answer['error']}")

    async def held_account(self, account_pub: str) -> str | None:
        reply = await self._nc.request(CLAIMS_LOOKUP.format(account=account_pub), b"", timeout=5)
        text = (reply.data or b"").decode(errors="replace").strip()
        return text if text.count(".") == 2 else None  # a JWT; anything else (an error) holds none we know

    # --- the connection -------------------------------------------------------------------------------
    async def another(self, settings: BusSettings, name: str) -> Bus:
        return await NatsBus.connect(settings, name)

    async def round_trip(self, timeout: float) -> None:
        try:
            await self._nc.flush(timeout=max(1, math.ceil(timeout)))
        except (TimeoutError, NatsError) as exc:
            raise Unavailable(f"NATS did not answer a ping within {timeout:g}s: {describe(exc)}") from None

    @property
    def connected(self) -> bool:
        return bool(self._nc.is_connected)

    @property
    def reconnects(self) -> int:
        return int(self._nc.stats["reconnects"])

    @property
    def max_payload(self) -> int:
        return int(self._nc.max_payload)

    async def close(self) -> None:
        if not self._nc.is_closed:
            await close(self._nc)
