"""Raw nats-py doing what one platform command does: the same fsynced writes, in the same order, over the
same hops, from as many processes, at the same concurrency. Nothing else: no HTTP, no validation, no
tracing, no driver; so the gap between this and the platform is what our processes add, and the gap between
this and the one-write raw baseline is what the writes themselves cost on nats-server.

One command (``writes=6``, the platform's chain in early 2026-12; today's is ``writes=4``)::

    client --request--> "lifecycle": KV compare-and-set of the desired record        (1)
                                     then side by side: the command (work queue)     (2)
                                                        the audit record              (3)
                                                        the public event              (4)
                                     reply
    "agent" (one durable pull consumer per cluster, one command at a time, each agent its own connection):
        fetch, the result (acked publish)                                            (5), ack (waits for it)
    "lifecycle" results consumer (batch 64, 32 at a time, like lifecycle's):
        fetch, KV compare-and-set of the record with the result                      (6), ack
    client sees the result's KV write (a core subscription on the bucket, like the benchmark's observer)

``writes=5``: no command copy; each agent's consumer follows its own clusters' keys of the desired-state
bucket (and skips the result records lifecycle writes on the same keys).

``writes=4``: as 5, and the result is no stream write: the agent asks "lifecycle" (a core request on its
cluster's subject, a queue group) to write it into the record (6), waits for the answer, then acks.

A second layout may run beside the first in one bench (``Layout.variant``: its own streams, buckets and
subjects), e.g. with the desired state spread over several buckets (``Layout.buckets``): an agent's
consumer then walks only its own bucket's writes when it looks for its next record.

Every stream has the platform's storage, retention and duplicate window; every publish a message id;
``sync_interval: always`` is the server's (the benchmark's server is the platform's).

The roles run as child processes (``python -m tests.bench.samewrites <role> <config>``), like the platform's
services and agent workers, so one Python process's CPU does not cap the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import nats
import nats.aio.client
import nats.errors
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import KeyWrongLastSequenceError

from services.bus.running import new_event_loop
from tests.bench.baseline import closed_loop, offered_load
from tests.bench.stats import summary

DESIRED, RESULT = 0, 1
CAS_TRIES = 5
"""Compare-and-set writes of one record before giving up (a result and the next command can cross)."""
_HEAD = struct.Struct("!QBH")
"""seq, kind (desired or result), length of the key that follows."""


@dataclass
class Layout:
    """What every role needs to know (passed to the children as JSON)."""

    url: str
    creds: str
    clusters: int
    writes: int = 6
    shards: int = 16
    sizes: dict[str, int] = field(default_factory=dict)
    """Bytes of a desired record, a command, and the small records (audit, event, result)."""

    def cluster(self, i: int) -> str:
        return f"c{i:05d}"

    def key(self, i: int) -> str:
        # Cluster first, as a per-cluster filter on the bucket needs (the "writes=5" shape).
        return f"{self.cluster(i)}.t{i:05d}"

    variant: str = ""
    """Names a second baseline beside the first in one run (its streams, bucket(s) and subjects apart)."""
    buckets: int = 1
    """Desired-state buckets, the clusters spread over them (``i % buckets``): each agent's consumer walks
    only its own bucket's writes."""
    views: bool = False
    """"lifecycle" also watches every bucket, as the platform's lifecycle keeps its views (an ordered push
    consumer per bucket from each key's last entry on): each of its writes comes back to it once more."""

    @property
    def prefix(self) -> str:
        """Subjects' first tokens."""
        return "benchsw" + (f".{self.variant}" if self.variant else "")

    @property
    def stem(self) -> str:
        """Streams' and buckets' names start so."""
        return "BENCHSW" + (f"_{self.variant.upper()}" if self.variant else "")

    def bucket(self, i: int) -> str:
        return self.stem if self.buckets <= 1 else f"{self.stem}_{i % self.buckets:02d}"

    def bucket_names(self) -> list[str]:
        return sorted({self.bucket(i) for i in range(min(self.clusters, max(1, self.buckets)))})

    def bucket_of_key(self, key: str) -> str:
        return self.bucket(int(key.rsplit(".t", 1)[1]))

    def plain(self) -> dict[str, str]:
        """The plain streams (audit, events, results) and their subjects."""
        return {f"{self.stem}_{part.upper()}": f"{self.prefix}.{part}.>" for part in ("audit", "events", "evt")}

    @property
    def act(self) -> str:
        return f"{self.prefix}.act"

    @property
    def result_call(self) -> str:
        """``writes=4``: ``result_call.<cluster>``, the agents' requests to record their results."""
        return f"{self.prefix}.result"

    @property
    def results_durable(self) -> str:
        return self.prefix.replace(".", "-") + "-results"

    def cmd_stream(self, shard: int) -> str:
        return f"{self.stem}_CMD_{shard:02d}"

    def cmd_subject(self, i: int) -> str:
        return f"{self.prefix}.cmd.{i % self.shards:02d}.{self.cluster(i)}"


def payload(seq: int, kind: int, key: str, size: int) -> bytes:
    head = _HEAD.pack(seq, kind, len(key)) + key.encode()
    return head + b"x" * max(0, size - len(head))


def unpack(data: bytes) -> tuple[int, int, str]:
    seq, kind, n = _HEAD.unpack_from(data)
    return seq, kind, data[_HEAD.size : _HEAD.size + n].decode()


async def connect(layout: Layout, name: str) -> nats.aio.client.Client:
    return await nats.connect(layout.url, user_credentials=layout.creds, name=name, max_reconnect_attempts=3)


async def declare(layout: Layout) -> None:
    """The streams, the bucket and the consumers, with the platform's settings (done once, by the bench)."""
    nc = await connect(layout, "bench-samewrites-setup")
    js = nc.jetstream()
    try:
        await remove(js, layout)
        for bucket in layout.bucket_names():
            await js.create_key_value(KeyValueConfig(bucket=bucket, history=5, storage=StorageType.FILE))
        for name, subject in layout.plain().items():
            await js.add_stream(
                StreamConfig(name=name, subjects=[subject], storage=StorageType.FILE, duplicate_window=120.0)
            )
        await js.add_consumer(
            f"{layout.stem}_EVT",
            ConsumerConfig(
                durable_name=layout.results_durable, ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=10_000
            ),
        )
        for shard in range(layout.shards if layout.writes >= 6 else 0):
            await js.add_stream(
                StreamConfig(
                    name=layout.cmd_stream(shard),
                    subjects=[f"{layout.prefix}.cmd.{shard:02d}.>"],
                    retention=RetentionPolicy.WORK_QUEUE,
                    storage=StorageType.FILE,
                    duplicate_window=24 * 3600.0,
                    discard=DiscardPolicy.NEW,
                    max_consumers=layout.clusters + 1,
                )
            )
        sem = asyncio.Semaphore(64)

        async def consumer(i: int) -> None:
            stream, subject = agent_source(layout, i)
            async with sem:
                await js.add_consumer(
                    stream,
                    ConsumerConfig(
                        durable_name=f"agent-{layout.cluster(i)}",
                        filter_subject=subject,
                        deliver_policy=DeliverPolicy.NEW if layout.writes < 6 else DeliverPolicy.ALL,
                        ack_policy=AckPolicy.EXPLICIT,
                        ack_wait=30,
                        max_ack_pending=1,
                        mem_storage=True,  # as the platform's agent consumers
                    ),
                    timeout=60,
                )

        await asyncio.gather(*(consumer(i) for i in range(layout.clusters)))
    finally:
        await nc.close()


def agent_source(layout: Layout, i: int) -> tuple[str, str]:
    """(stream, filter) an agent reads its commands from."""
    if layout.writes >= 6:
        return layout.cmd_stream(i % layout.shards), layout.cmd_subject(i)
    return f"KV_{layout.bucket(i)}", f"$KV.{layout.bucket(i)}.{layout.cluster(i)}.>"


async def remove(js: Any, layout: Layout) -> None:
    names = [
        *(f"KV_{b}" for b in layout.bucket_names()),
        *layout.plain(),
        *(layout.cmd_stream(s) for s in range(layout.shards)),
    ]
    for name in names:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)


# --- the roles (child processes) ----------------------------------------------------------------------


class Lifecycle:
    """Answers the client's requests (KV write, then command, audit and event side by side) and folds the
    agents' results into the records (KV write), remembering each record's revision like lifecycle."""

    def __init__(self, layout: Layout, nc: nats.aio.client.Client) -> None:
        self.layout = layout
        self.nc = nc
        self.js = nc.jetstream()
        self.revisions: dict[str, int] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> list[Awaitable[None]]:
        self.kvs = {b: await self.js.key_value(b) for b in self.layout.bucket_names()}
        sem = asyncio.Semaphore(64)

        async def seed(i: int) -> None:
            key = self.layout.key(i)
            async with sem:
                kv = self.kvs[self.layout.bucket_of_key(key)]
                self.revisions[key] = await kv.put(key, payload(0, RESULT, key, self.layout.sizes["record"]))

        await asyncio.gather(*(seed(i) for i in range(self.layout.clusters)))
        if self.layout.views:
            await self._watch_buckets()
        await self.nc.subscribe(self.layout.act, cb=self._on_request)
        if self.layout.writes <= 4:
            await self.nc.subscribe(f"{self.layout.result_call}.*", queue="lifecycle", cb=self._on_result_call)
            return []
        return [self._results()]

    async def _watch_buckets(self) -> None:
        """Lifecycle's views: every bucket followed, each delivery's stream sequence kept per key."""
        self.seen: dict[str, int] = {}

        async def seen(msg: Any) -> None:
            self.seen[msg.subject] = msg.metadata.sequence.stream

        for bucket in self.layout.bucket_names():
            await self.js.subscribe(
                f"$KV.{bucket}.>",
                cb=seen,
                ordered_consumer=True,
                config=ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT),
                idle_heartbeat=2.0,
                pending_msgs_limit=0,
                pending_bytes_limit=0,
            )

    async def _write(self, key: str, value: bytes) -> None:
        """Compare-and-set on the remembered revision; on a conflict read it and write again (lifecycle's
        rule; rare here: the bench uses a key again only after ~all others)."""
        kv = self.kvs[self.layout.bucket_of_key(key)]
        for _ in range(CAS_TRIES - 1):
            try:
                self.revisions[key] = await kv.update(key, value, last=self.revisions[key])
                return
            except KeyWrongLastSequenceError:
                self.revisions[key] = (await kv.get(key)).revision
        self.revisions[key] = await kv.update(key, value, last=self.revisions[key])

    async def _on_request(self, msg: Any) -> None:
        task = asyncio.create_task(self._act(msg))  # a subscription's callbacks run one at a time
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _act(self, msg: Any) -> None:
        seq, _kind, key = unpack(msg.data)
        i = int(key.rsplit(".t", 1)[1])
        sizes, small = self.layout.sizes, self.layout.sizes["small"]
        await self._write(key, payload(seq, DESIRED, key, sizes["record"]))
        writes = [
            self.js.publish(
                f"{self.layout.prefix}.audit.{key}", payload(seq, 0, key, small), headers={"Nats-Msg-Id": f"a{seq}"}
            ),
            self.js.publish(
                f"{self.layout.prefix}.events.{key}", payload(seq, 0, key, small), headers={"Nats-Msg-Id": f"e{seq}"}
            ),
        ]
        if self.layout.writes >= 6:
            command = payload(seq, DESIRED, key, sizes["command"])
            writes.append(self.js.publish(self.layout.cmd_subject(i), command, headers={"Nats-Msg-Id": f"c{seq}"}))
        await asyncio.gather(*writes)
        await msg.respond(b"ok")

    async def _on_result_call(self, msg: Any) -> None:
        task = asyncio.create_task(self._record(msg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _record(self, msg: Any) -> None:
        seq, _kind, key = unpack(msg.data)
        await self._write(key, payload(seq, RESULT, key, self.layout.sizes["record"]))
        await msg.respond(b"ok")

    async def _results(self) -> None:
        psub = await self.js.pull_subscribe_bind(durable=self.layout.results_durable, stream=f"{self.layout.stem}_EVT")
        gate = asyncio.Semaphore(32)
        while True:
            try:
                msgs = await psub.fetch(64, timeout=2)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                await gate.acquire()
                task = asyncio.create_task(self._fold(msg, gate))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def _fold(self, msg: Any, gate: asyncio.Semaphore) -> None:
        try:
            seq, _kind, key = unpack(msg.data)
            record = payload(seq, RESULT, key, self.layout.sizes["record"])
            await self._write(key, record)
            await msg.ack()
        finally:
            gate.release()


class Agents:
    """Each agent: its own connection and durable consumer; fetch one, publish the result, ack (waiting)."""

    def __init__(self, layout: Layout, mine: list[int]) -> None:
        self.layout = layout
        self.mine = mine
        self.conns: list[nats.aio.client.Client] = []

    async def start(self) -> list[Awaitable[None]]:
        loops: list[Awaitable[None]] = []
        for i in self.mine:
            nc = await connect(self.layout, f"bench-samewrites-agent-{i}")
            self.conns.append(nc)
            stream, _subject = agent_source(self.layout, i)
            psub = await nc.jetstream().pull_subscribe_bind(durable=f"agent-{self.layout.cluster(i)}", stream=stream)
            loops.append(self._run(nc, psub, i))
        return loops

    async def _run(self, nc: nats.aio.client.Client, psub: Any, i: int) -> None:
        js = nc.jetstream()
        subject, small = f"{self.layout.prefix}.evt.{self.layout.cluster(i)}", self.layout.sizes["small"]
        while True:
            try:
                msgs = await psub.fetch(1, timeout=20)
            except (TimeoutError, nats.errors.TimeoutError):
                continue
            for msg in msgs:
                seq, kind, key = unpack(msg.data)
                if kind == DESIRED and self.layout.writes <= 4:
                    call = f"{self.layout.result_call}.{self.layout.cluster(i)}"
                    await self._ask(nc, call, payload(seq, RESULT, key, small))
                elif kind == DESIRED:
                    await js.publish(subject, payload(seq, RESULT, key, small), headers={"Nats-Msg-Id": f"r{seq}"})
                await msg.ack_sync(timeout=5)

    @staticmethod
    async def _ask(nc: nats.aio.client.Client, subject: str, data: bytes) -> None:
        """Until answered, like the agent (no backoff needed here: nothing is down)."""
        while True:
            try:
                await nc.request(subject, data, timeout=5)
                return
            except (TimeoutError, nats.errors.TimeoutError, nats.errors.NoRespondersError):
                continue


async def serve_role(role: str, layout: Layout, part: int, parts: int) -> None:
    loops: list[Awaitable[None]]
    if role == "lifecycle":
        nc = await connect(layout, "bench-samewrites-lifecycle")
        loops = await Lifecycle(layout, nc).start()
    else:
        loops = await Agents(layout, list(range(part, layout.clusters, parts))).start()
    print("ready", flush=True)
    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    eof = asyncio.ensure_future(reader.read())  # the bench went away: so do we
    running = [asyncio.ensure_future(loop) for loop in loops]
    await asyncio.wait([stop, eof, *running], return_when=asyncio.FIRST_COMPLETED)
    for task in running:
        task.cancel()


def main() -> None:
    role, config, part, parts = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    with asyncio.Runner(loop_factory=new_event_loop) as run:
        run.run(serve_role(role, Layout(**config), part, parts))


# --- the client (in the bench process) ------------------------------------------------------------------


class SameWrites:
    """The baseline: declares, starts the role processes, drives commands like the benchmark drives the API."""

    def __init__(self, layout: Layout, connect_client: Callable[[], Awaitable[nats.aio.client.Client]]) -> None:
        self.layout = layout
        self.connect_client = connect_client
        self.procs: list[asyncio.subprocess.Process] = []
        self.waiting: dict[int, asyncio.Future[float]] = {}
        self.seq = 0
        self.free: asyncio.Queue[int] = asyncio.Queue()
        for i in range(layout.clusters):
            self.free.put_nowait(i)  # one command in flight per key, like the benchmark's tenants

    def pids(self) -> dict[str, list[int]]:
        return {"lifecycle": [self.procs[0].pid], "agents": [p.pid for p in self.procs[1:]]}

    async def __aenter__(self) -> SameWrites:
        await declare(self.layout)
        config = json.dumps(asdict(self.layout))
        for role, part, parts in (("lifecycle", 0, 1), ("agents", 0, 2), ("agents", 1, 2)):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bench.samewrites",
                role,
                config,
                str(part),
                str(parts),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            self.procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 120)
            if line.strip() != b"ready":
                raise RuntimeError(f"samewrites {role} did not start (exit {proc.returncode})")
        self.nc = await self.connect_client()
        for bucket in self.layout.bucket_names():
            await self.nc.subscribe(f"$KV.{bucket}.>", cb=self._on_write, pending_msgs_limit=1_000_000)
        await self.nc.flush()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.procs:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        with contextlib.suppress(Exception):
            await remove(self.nc.jetstream(), self.layout)
        await self.nc.close()

    async def _on_write(self, msg: Any) -> None:
        now = time.time()
        if not msg.data:
            return
        seq, kind, _key = unpack(msg.data)
        fut = self.waiting.pop(seq, None) if kind == RESULT else None
        if fut is not None and not fut.done():
            fut.set_result(now)

    async def one(self) -> float:
        """One command's round trip: request sent to its result's KV write seen."""
        i = await self.free.get()
        try:
            self.seq += 1
            seq = self.seq
            fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            self.waiting[seq] = fut
            start = time.time()
            await self.nc.request(self.layout.act, payload(seq, DESIRED, self.layout.key(i), 64), timeout=30)
            return await asyncio.wait_for(fut, 60) - start
        finally:
            self.free.put_nowait(i)

    async def fixed_rate(
        self, rate: float, duration: float, record: list[tuple[float, float]] | None = None
    ) -> dict[str, Any]:
        lat, errors, sent = await offered_load(self.one, rate, duration, record)
        return {"rate": rate, "sent": sent, "errors": errors, **summary(lat)}

    async def max_rate(self, concurrency: int, duration: float, cpu: Callable[[], dict[str, float]]) -> dict[str, Any]:
        cpu0 = cpu()
        lat, errors, elapsed = await closed_loop(self.one, concurrency, duration)
        done = max(1, len(lat))
        cpu_ms = {k: (v - cpu0.get(k, 0.0)) * 1e3 / done for k, v in cpu().items()}
        per_s = len(lat) / elapsed
        return {"concurrency": concurrency, "per_s": per_s, "errors": errors, "cpu_ms_per_command": cpu_ms} | summary(
            lat
        )


if __name__ == "__main__":
    main()
