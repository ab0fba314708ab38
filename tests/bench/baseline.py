"""Raw-NATS baselines, measured on the same server in the same run as the platform's figures."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.aio.client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType, StreamConfig

from tests.bench.stats import summary

Connect = Callable[[], Awaitable[nats.aio.client.Client]]

_STAMP = struct.Struct("!dQ")


def _payload(size: int, seq: int) -> bytes:
    head = _STAMP.pack(time.time(), seq)
    return head + b"x" * max(0, size - len(head))


async def core_throughput(connect: Connect, size: int, count: int) -> dict[str, Any]:
    """Bare core NATS: one publisher, one Python subscriber that only counts; messages/s received."""
    pub, sub_nc = await connect(), await connect()
    got = 0
    done = asyncio.Event()
    first = last = 0.0

    async def on_msg(_msg: Any) -> None:
        nonlocal got, last
        got += 1
        last = time.time()
        if got >= count:
            done.set()

    try:
        sub = await sub_nc.subscribe("bench.hb.*", cb=on_msg, pending_msgs_limit=count * 2)
        await sub_nc.flush()
        first = time.time()
        for i in range(count):
            await pub.publish(f"bench.hb.c{i % 1000}", _payload(size, i))
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await pub.flush()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 60)
        await sub.unsubscribe()
    finally:
        await pub.close()
        await sub_nc.close()
    elapsed = max(1e-9, last - first)
    return {"messages": count, "received": got, "size": size, "per_s": got / elapsed}


class JsRoundTrip:
    """Bare JetStream: publish (acked, file storage, work queue) -> a durable pull consumer fetching one at a
    time (like an agent) -> ack. Latency: publish start to the consumer holding the message."""

    STREAM = "BENCHRT"

    def __init__(self, connect: Connect, size: int, consumers: int = 32) -> None:
        self.connect = connect
        self.size = size
        self.consumers = consumers
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.seq = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.pub: nats.aio.client.Client | None = None
        self.sub: nats.aio.client.Client | None = None

    async def __aenter__(self) -> JsRoundTrip:
        self.pub, self.sub = await self.connect(), await self.connect()
        js = self.pub.jetstream()
        with contextlib.suppress(Exception):
            await js.delete_stream(self.STREAM)
        await js.add_stream(
            StreamConfig(
                name=self.STREAM,
                subjects=["bench.rt.>"],
                retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE,
                duplicate_window=120.0,
            )
        )
        sjs = self.sub.jetstream()
        for k in range(self.consumers):
            name = f"rt-{k}"
            await sjs.add_consumer(
                self.STREAM,
                ConsumerConfig(
                    durable_name=name,
                    filter_subject=f"bench.rt.{k}",
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=30,
                    max_ack_pending=1,
                    mem_storage=True,  # as the platform's agent consumers (``agent_consumer_config``)
                ),
            )
            psub = await sjs.pull_subscribe_bind(durable=name, stream=self.STREAM)
            self.tasks.append(asyncio.create_task(self._consume(psub)))
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        assert self.pub is not None and self.sub is not None
        with contextlib.suppress(Exception):
            await self.pub.jetstream().delete_stream(self.STREAM)
        await self.pub.close()
        await self.sub.close()

    async def _consume(self, psub: Any) -> None:
        while True:
            try:
                msgs = await psub.fetch(1, timeout=5)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                now = time.time()
                _sent, seq = _STAMP.unpack_from(msg.data)
                await msg.ack_sync(timeout=5)  # like the agent: wait for the server to confirm
                fut = self.waiting.pop(seq, None)
                if fut is not None and not fut.done():
                    fut.set_result(now)

    async def one(self) -> float:
        assert self.pub is not None
        self.seq += 1
        seq = self.seq
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[seq] = fut
        start = time.time()
        await self.pub.jetstream().publish(
            f"bench.rt.{seq % self.consumers}", _payload(self.size, seq), headers={"Nats-Msg-Id": f"rt-{seq}"}
        )
        end = await asyncio.wait_for(fut, 30)
        return end - start

    async def fixed_rate(
        self, rate: float, duration: float, record: list[tuple[float, float]] | None = None
    ) -> dict[str, Any]:
        lat, errors, sent = await offered_load(self.one, rate, duration, record)
        return {"rate": rate, "sent": sent, "errors": errors, **summary(lat)}

    async def max_rate(self, concurrency: int, duration: float) -> dict[str, Any]:
        lat, errors, elapsed = await closed_loop(self.one, concurrency, duration)
        return {"concurrency": concurrency, "per_s": len(lat) / elapsed, "errors": errors, **summary(lat)}


async def offered_load(
    one: Callable[[], Awaitable[float]],
    rate: float,
    duration: float,
    record: list[tuple[float, float]] | None = None,
) -> tuple[list[float], int, int]:
    """``one()`` started ``rate`` times a second for ``duration`` seconds, however long each takes (an open
    loop): the latencies it returned, how many failed, how many were started; with ``record``, each one's
    start (wall clock) and latency are added to it too (a run's timeline)."""
    lat: list[float] = []
    errors = 0

    async def shot() -> None:
        nonlocal errors
        try:
            at = time.time()
            lat.append(await one())
            if record is not None:
                record.append((at, lat[-1]))
        except Exception:
            errors += 1

    tasks = []
    t0 = time.monotonic()
    n = int(rate * duration)
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(shot()))
    await asyncio.gather(*tasks)
    return lat, errors, n


async def closed_loop(
    one: Callable[[], Awaitable[float]], concurrency: int, duration: float
) -> tuple[list[float], int, float]:
    """``concurrency`` callers, each running ``one()`` again as soon as it returns, for ``duration`` seconds:
    the latencies, how many failed, the seconds it took."""
    lat: list[float] = []
    errors = 0
    stop_at = time.monotonic() + duration

    async def loop() -> None:
        nonlocal errors
        while time.monotonic() < stop_at:
            try:
                lat.append(await one())
            except Exception:
                errors += 1

    t0 = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return lat, errors, time.monotonic() - t0


async def bare_connections(connect: Connect, count: int) -> tuple[list[nats.aio.client.Client], float]:
    """Open ``count`` bare connections at once (same JWT auth as everything else); seconds it took."""
    t0 = time.monotonic()
    sem = asyncio.Semaphore(200)

    async def one() -> nats.aio.client.Client:
        async with sem:
            return await connect()

    conns = await asyncio.gather(*(one() for _ in range(count)))
    return list(conns), time.monotonic() - t0


async def consumer_creation(
    connect: Connect, count: int, streams: int, concurrency: int = 64, work_queue: bool = True
) -> dict[str, Any]:
    """``count`` durable consumers, one per cluster-like filter, spread over ``streams`` scratch work-queue
    streams the way agents' are over the command shards (file storage, explicit acks); deleted afterwards.

    On a work-queue stream nats-server checks every new consumer's filter against all the others of that
    stream, so the rate falls as a stream's count grows: this is the floor under "every agent bound to its
    command consumer". ``work_queue=False``: a limits stream instead, each consumer starting from the last
    message of each of its subjects (agents' consumers of the desired state: no overlap checks).
    """
    nc = await connect()
    js = nc.jetstream()
    names = [f"BENCH_WQ_{i:02d}" for i in range(streams)]
    try:
        for i, name in enumerate(names):
            await js.add_stream(
                StreamConfig(
                    name=name,
                    subjects=[f"bench.wq.{i:02d}.>"],
                    retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
                    max_consumers=count + 1,
                )
            )
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            name = f"c{i:06d}"
            shard = i % streams
            async with sem:
                await js.add_consumer(
                    names[shard],
                    ConsumerConfig(
                        name=name,
                        durable_name=name,
                        filter_subject=f"bench.wq.{shard:02d}.{name}.>",
                        deliver_policy=DeliverPolicy.ALL if work_queue else DeliverPolicy.LAST_PER_SUBJECT,
                        ack_policy=AckPolicy.EXPLICIT,
                        max_ack_pending=1,
                        mem_storage=True,  # as the platform's agent consumers
                    ),
                    timeout=120,
                )

        t0 = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(count)))
        took = time.monotonic() - t0
        return {"consumers": count, "streams": streams, "seconds": took, "consumers_per_s": count / took}
    finally:
        for name in names:
            with contextlib.suppress(Exception):
                await js.delete_stream(name)
        await nc.close()
