"""The scale benchmark: a platform started for the run, N simulated agents, six figures beside raw NATS.

``python -m tests.bench [--agents N] [--json out.json]`` (``make bench ARGS="--agents 1000"``).

The platform is the test harness's ``Stack`` (a real nats-server in operator mode, every service as its own
process) on production clocks (heartbeat 5 s, offline after 12 s). The agents are real ``Agent`` objects,
each with its own NATS connection and credentials, many per worker process (``tests.bench.worker``). Every
figure is printed beside a raw-NATS baseline measured on the same server in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import json
import math
import os
import platform as pyplatform
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import nats.aio.client
from nats.js.kv import KeyValue

from agent.bus import NatsIdentity
from agent.bus.dial import UserCreds
from agent.drivers.sim import read_state
from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import (
    Action,
    ClusterConnectInfo,
    ClusterCreate,
    ClusterEvent,
    ClusterHealth,
    Command,
    Empty,
    Heartbeat,
    Member,
    NameRequest,
    Presence,
    PresenceList,
    Quota,
    Resources,
    WorkloadAction,
    WorkloadRecord,
    WorkloadRef,
    WorkloadSpec,
    decode,
    encode,
    workload_key,
)
from schemas.retrying import backoff_delay
from services.bus import call
from services.platform.natsd import free_port
from tests.bench import accepting, baseline, connectwrites, natsprofile, rounds, samewrites, steps, traffic
from tests.bench.fleet import Fleet
from tests.bench.http import LeanHttp
from tests.bench.stats import (
    bucket_quantile,
    diff_buckets,
    histogram,
    hop_profile,
    parse_prometheus,
    render_hops,
    summary,
)
from tests.bench.timeline import Timeline
from tests.bench.worker import rss_bytes
from tests.harness import Proc, Stack, wait_for

T = TypeVar("T")

SERVICES = ("registry", "access", "lifecycle", "health", "api")

# Production clocks: the targets are about what an operator gets, not the tests' fast clocks.
PROD_ENV = {
    "TETHER_HEARTBEAT_INTERVAL": "5",
    "TETHER_OFFLINE_AFTER": "12",
    "TETHER_SWEEP_INTERVAL": "1",
    "TETHER_FLUSH_INTERVAL": "2",
    "TETHER_SLEEP_CHECK_INTERVAL": "15",
    # INFO shows each service's start-up steps (``--keep`` keeps the logs); it costs CPU under load.
    "TETHER_LOG_LEVEL": os.environ.get("TETHER_BENCH_LOG_LEVEL", "WARNING"),
}
PROJECT = "bench"
IDLE_CPU_WINDOW = 5.0
"""Seconds of no commands before phase 3's maximum, to tell each process's idle CPU from its CPU per command."""
SETTLE_DEADLINE = 60.0
"""Longest wait after phase 3's maximum for the platform's CPU to fall back to its idle rate."""
KB = 1024


class GcPauses:
    """The bench client's own garbage-collection pauses in a window: each one holds up every command in flight
    and every send due meanwhile, so a slow command may be the measuring client's."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def _record(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._record)
        return self

    def __exit__(self, *exc: object) -> None:
        gc.callbacks.remove(self._record)

    def summary(self) -> dict[str, float]:
        longest = max((s for _, s in self.pauses), default=0.0)
        full = sum(1 for g, _ in self.pauses if g == 2)
        return {"collections": len(self.pauses), "full": full, "max_ms": longest * 1e3}


def quiet_heap() -> None:
    """Collect and freeze the bench client's heap before a measuring window. Its tenants, stamps and issued
    commands make a heap whose full collection took 53-78 ms inside a window (every command in flight held
    up, on the measuring side); frozen, a window's collections walk only what the window allocated. Called
    before every side's window alike."""
    gc.collect()
    gc.freeze()


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


@dataclass
class BenchStack(Stack):
    """The harness's stack, each service with a Prometheus port the benchmark scrapes."""

    prom: dict[str, int] = field(default_factory=dict)

    def service(self, name: str) -> Proc:
        proc = super().service(name)
        port = self.prom.setdefault(name, free_port())
        proc.env["TETHER_PROMETHEUS_PORT"] = str(port)
        return proc

    def pids(self) -> dict[str, int]:
        out = {n: p.proc.pid for n, p in self.services.items() if p.proc is not None and p.running}
        if self.nats is not None and self.nats.proc is not None:
            out["nats"] = self.nats.proc.pid
        return out

    def rss(self) -> dict[str, int]:
        return {name: rss_bytes(pid) for name, pid in self.pids().items()}

    async def scrape(self, service: str) -> list[tuple[str, dict[str, str], float]]:
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.get(f"http://127.0.0.1:{self.prom[service]}/metrics")
            return parse_prometheus(resp.text)


class Observer:
    """Sees every write of the desired-state buckets (a core subscription on their KV subjects), so a command
    is 'applied and observed' the moment lifecycle publishes the agent's result for its generation.

    A core subscriber gets a publish as nats-server routes it, before the stream has stored (fsynced) it and
    acknowledged it (measured: 298 of 300 writes seen first, 0.33 against 0.59 ms at the median). So the round
    trip ends at the result's publish, in the platform and in the same writes alike (``samewrites`` watches the
    same way); raw JetStream's ends at its consumer, after the store."""

    def __init__(self) -> None:
        self.observed: dict[str, tuple[int, float]] = {}
        self.waiting: dict[str, tuple[int, asyncio.Future[float]]] = {}
        self.subs: list[Any] = []
        self.stamps: dict[str, Stamps] = {}
        """Per key, the clocks of its latest command (for the per-hop profile of phase 3)."""

    async def start(self, nc: nats.aio.client.Client) -> None:
        self.subs = [
            await nc.subscribe(f"$KV.{bucket}.>", cb=self._on, pending_msgs_limit=1_000_000)
            for bucket in subjects.DESIRED_BUCKETS
        ]

    async def _on(self, msg: Any) -> None:
        now = time.time()
        if not msg.data:
            return
        try:
            record = decode(msg.data, WorkloadRecord)
        except Exception:
            return
        key = msg.subject.split(".", 3)[3]  # $KV.<bucket>.<cluster>.<kind>.<project>.<name>
        if record.observed is None or record.observed.generation < record.generation:
            # The desired write of a command: when lifecycle decided it and when it was published (seen).
            self.stamps[key] = Stamps(record.generation, decided=record.updated_at, published=now)
            return
        gen = record.observed.generation
        stamp = self.stamps.get(key)
        if stamp is not None and stamp.generation == gen:
            stamp.applied, stamp.folded, stamp.observed = record.observed.at, record.updated_at, now
        prev = self.observed.get(key)
        if prev is None or prev[0] < gen:
            self.observed[key] = (gen, now)
        want = self.waiting.get(key)
        if want is not None and gen >= want[0] and not want[1].done():
            want[1].set_result(now)
            del self.waiting[key]

    def seen(self, key: str, generation: int) -> float | None:
        got = self.observed.get(key)
        return got[1] if got is not None and got[0] >= generation else None

    async def wait(self, key: str, generation: int, timeout: float) -> float:
        at = self.seen(key, generation)
        if at is not None:
            return at
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[key] = (generation, fut)
        return await asyncio.wait_for(fut, timeout)


@dataclass
class Stamps:
    """One command's clocks (all processes share this machine's clock): lifecycle decided the new desired
    record, it was published (seen by the bench, before nats-server stored it), the agent applied it,
    lifecycle folded the result in, and the result record was published (seen)."""

    generation: int
    decided: float
    published: float
    applied: float = 0.0
    folded: float = 0.0
    observed: float = 0.0

    def hops(self, sent: float, answered: float) -> dict[str, float] | None:
        """Seconds of each hop of a command sent at ``sent`` whose API call returned at ``answered``."""
        if not self.observed:
            return None
        return {
            "http+api+request": self.decided - sent,
            # A write's fsync is in the hop after its publish: the agent's (its consumer delivers stored
            # records) and the answer's (lifecycle waits for the acknowledgement before the audit write).
            "desired record published": self.published - self.decided,
            "answer (desired write's ack, audit write, reply, HTTP)": answered - self.published,
            "desired write stored + to the agent + apply": self.applied - self.published,
            "result write + lifecycle fetch": self.folded - self.applied,
            "result record published": self.observed - self.folded,
        }


@dataclass
class Tenant:
    name: str
    cluster: str
    state: str = "running"

    @property
    def key(self) -> str:
        return workload_key(WorkloadRef(kind="tenant", project=PROJECT, name=self.name))


@dataclass
class Issued:
    tenant: Tenant
    generation: int
    op_id: str
    sent: float


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.n: int = args.agents
        self.results: dict[str, Any] = {"agents": self.n, "machine": machine()}
        if args.fleet_cpus:
            self.results["cpus"] = {"fleet": sorted(args.fleet_cpus), "platform": sorted(os.sched_getaffinity(0))}
        if args.work_dir:
            shutil.rmtree(args.work_dir, ignore_errors=True)  # a run starts from nothing
        root = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="tether-bench-"))
        self.root = root
        self.stack = BenchStack(
            tmp=root / "platform",
            env_overrides=dict(PROD_ENV),
            nats_profiling_port=free_port() if args.nats_profile else 0,
        )
        # Agent state on tmpfs when there is one: the sim driver fsyncs its whole state on every apply,
        # which would measure this machine's disk, not the platform.
        shm = Path("/dev/shm")
        self.state_root = Path(tempfile.mkdtemp(prefix="tether-bench-agents-", dir=shm if shm.is_dir() else root))
        self.clusters = [f"c{i:05d}" for i in range(self.n)]
        self.tenants: list[Tenant] = []
        self.fleet: Fleet | None = None
        self.nc: nats.aio.client.Client | None = None
        self.observer = Observer()
        self.online: dict[str, float] = {}
        self.offline: dict[str, float] = {}
        self.answering: dict[str, float] = {}
        """Seconds after NATS was started again until each service answered (phase 5)."""
        self.exits: list[dict[str, Any]] = []
        """Services that ended during phase 5 (name, exit code, seconds after NATS started), each started again."""
        self.http: LeanHttp | None = None
        self.issued: list[Issued] = []
        self.without_api = False
        """Commands go straight to lifecycle's endpoint over NATS, as the API would send them (``--without-api``)."""
        self.progress: list[dict[str, Any]] = []
        """Phase 1's course (``connect_progress``)."""
        self.timeline: Timeline | None = None
        self.trace: list[dict[str, float]] | None = None
        """The clocks of each command of the fixed-rate window under way, for the timeline."""
        if args.timeline:
            # nats-server prints each collection (start, mark's wall time) to its log, kept in the timeline.
            os.environ.setdefault("GODEBUG", "gctrace=1")

    # --- plumbing -----------------------------------------------------------------------
    async def connect(self) -> nats.aio.client.Client:
        return await nats.connect(
            self.stack.nats_url,
            user_credentials=str(self.stack.auth / "platform.creds"),
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            pending_size=64 * 1024 * 1024,
            error_cb=_quiet,
        )

    async def connect_creds_read_whole(self) -> nats.aio.client.Client:
        """``connect``, the creds file read whole at the connect (as agents read theirs)."""
        creds = UserCreds(NatsIdentity(creds=str(self.stack.auth / "platform.creds"), inbox_prefix="", refused=""))
        return await nats.connect(
            self.stack.nats_url,
            user_jwt_cb=creds.jwt,
            signature_cb=creds.sign,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            pending_size=64 * 1024 * 1024,
            error_cb=_quiet,
        )

    async def _on_cluster_event(self, msg: Any) -> None:
        try:
            event = decode(msg.data, ClusterEvent)
        except Exception:
            return
        if event.kind == "online":
            self.online[event.cluster] = event.at
        elif event.kind == "offline":
            self.offline[event.cluster] = event.at

    async def api(self, method: str, path: str, json: Any = None) -> Any:
        assert self.http is not None
        for attempt in range(20):
            status, body = await self.http.request(method, path, json)
            if status == 503 and attempt < 19:
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if status >= 300:
                raise RuntimeError(f"{method} {path}: {status} {str(body)[:300]}")
            return body
        raise AssertionError("unreachable")

    async def presence(self) -> dict[str, Presence]:
        """Presence of every bench cluster, in one request to the health service (10,000 one-by-one reads
        took longer than the reconnect they were timing)."""
        assert self.nc is not None
        listed = await call(self.nc, subjects.Health.PRESENCE_LIST, Empty(), PresenceList, timeout=30)
        ours = set(self.clusters)
        return {p.cluster: p for p in listed.items if p.cluster in ours}

    @contextlib.contextmanager
    def as_the_fleet(self) -> Iterator[None]:
        """With ``--fleet-cpus``, the bench's own thread on the fleet's CPUs meanwhile: the yardstick's clients
        stand for the agents, so they run where the agents do (nats-server stays on the platform's)."""
        if not self.args.fleet_cpus:
            yield
            return
        mine = os.sched_getaffinity(0)
        os.sched_setaffinity(0, self.args.fleet_cpus)
        try:
            yield
        finally:
            os.sched_setaffinity(0, mine)

    async def connect_yardstick(self, n: int, bare_n: int) -> None:
        """Phase 1's yardstick: ``bare_n`` bare connections (JWT auth), opened a thousand at a time (the opening
        is timed, not the closing), then ``n`` consumers."""
        took = 0.0
        nats_grew = 0
        cpu0 = self.cpu()
        for first in range(0, bare_n, 1000):
            batch = min(1000, bare_n - first)
            nats_before = rss_bytes(self.stack.pids()["nats"])
            conns, spent = await baseline.bare_connections(self.connect, batch)
            took += spent
            if first == 0:
                await asyncio.sleep(1)
                nats_grew = rss_bytes(self.stack.pids()["nats"]) - nats_before
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        first_batch = min(bare_n, 1000)
        cpu1 = self.cpu()
        self.results["baseline_connect"] = {
            "connections": bare_n,
            "seconds": took,
            "per_s": bare_n / took,
            "nats_bytes_per_connection": nats_grew / first_batch,
            "cpu_ms_per_connection": cpu_ms_each(cpu0, cpu1, bare_n),
        }
        each = nats_grew / first_batch / KB
        log(
            f"baseline: {bare_n} bare connections in {took:.2f}s; NATS +{each:.1f} KB each; CPU ms per connection "
            f"(open and close, JWT auth): {cpu_text(self.results['baseline_connect']['cpu_ms_per_connection'])}"
        )
        # The same, each connection's creds file read whole as the agents read theirs (agent.bus.dial.UserCreds);
        # nats-py's own reader (above, the yardstick of the target, unchanged) reads it a byte per system call.
        cpu_w = self.cpu()
        took_whole = 0.0
        for first in range(0, bare_n, 1000):
            conns, spent = await baseline.bare_connections(self.connect_creds_read_whole, min(1000, bare_n - first))
            took_whole += spent
            await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
        cpu1 = self.cpu()
        self.results["baseline_connect"]["seconds_creds_read_whole"] = took_whole
        self.results["baseline_connect"]["cpu_ms_per_connection_creds_read_whole"] = cpu_ms_each(cpu_w, cpu1, bare_n)
        log(
            f"baseline: {bare_n} bare connections, creds read whole: {took_whole:.2f}s; CPU ms per connection: "
            f"{cpu_text(self.results['baseline_connect']['cpu_ms_per_connection_creds_read_whole'])}"
        )
        # Agents' consumers are on the desired-state streams (limits streams, last per subject).
        created = await baseline.consumer_creation(self.connect, n, streams=subjects.DESIRED_SHARDS, work_queue=False)
        created["seconds_consumers"] = created.pop("seconds")  # "seconds" stays the connections'
        created["cpu_ms_per_consumer"] = cpu_ms_each(cpu1, self.cpu(), n)
        self.results["baseline_connect"].update(created)
        log(
            f"baseline: {n} consumers created on {subjects.DESIRED_SHARDS} streams in "
            f"{created['seconds_consumers']:.1f}s; CPU ms per "
            f"consumer: {cpu_text(created['cpu_ms_per_consumer'])}"
        )

    # --- the run ----------------------------------------------------------------------------
    async def run(self) -> dict[str, Any]:
        # A SIGTERM (``timeout``, a CI job's end) stops the run like Ctrl-C does: through the cleanup, so no
        # nats-server, service or agent worker is left behind.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        try:
            await self._run()
        finally:
            await self.cleanup()
        return self.results

    async def _run(self) -> None:
        n = self.n
        log(f"platform: starting nats-server and {', '.join(SERVICES)} (work dir {self.root})")
        await self.stack.start()
        if self.args.timeline and self.stack.nats is not None:
            self.timeline = Timeline(Path(self.args.timeline), self.stack.nats.config.store_dir)
            self.timeline_pids()
        self.nc = await self.connect()
        await self.observer.start(self.nc)
        await self.nc.subscribe(subjects.public_event("cluster.*"), cb=self._on_cluster_event)
        self.http = LeanHttp("127.0.0.1", self.stack.http_port, self.stack.admin_token, size=256)
        await asyncio.sleep(2)
        rss_idle = self.stack.rss()
        self.results["rss_idle"] = rss_idle

        # Raw NATS: memory per bare connection, and how fast bare connections open (JWT auth): as many as
        # there are agents, a thousand open at a time (the opening is timed, not the closing).
        bare_n = n if self.args.bare_all else min(n, 1000)
        with self.as_the_fleet():
            await self.connect_yardstick(n, bare_n)

        # The fsynced writes the platform makes per agent connect, raw, at the platform's concurrency: nats-server's
        # own share of phase 1 beyond the bare connections and consumers (``connectwrites``).
        written = await connectwrites.run(
            self.stack.nats_url, str(self.stack.auth / "platform.creds"), n, max(2, math.ceil(n / 2500)), self.connect
        )
        self.results["baseline_connect"]["seconds_writes"] = written["seconds"]
        log(
            f"baseline: the connect's fsynced writes of {n} agents ({written['writes_per_agent']} each, the "
            f"platform's concurrency) in {written['seconds']:.1f}s"
        )

        # Register the clusters (setup, not measured: one connect token each, from the registry).
        t0 = time.monotonic()
        tokens = await self.register(self.clusters)
        self.results["setup_register_s"] = time.monotonic() - t0
        log(f"setup: {n} clusters registered in {time.monotonic() - t0:.1f}s")

        # (1) N agents connected and online.
        workers = self.args.workers or max(2, math.ceil(n / 2500))
        self.fleet = Fleet(
            server=self.stack.nats_url,
            agents=dict(tokens),
            state_root=self.state_root,
            log_dir=self.root / "workers",
            workers=workers,
            env={"TETHER_LOG_LEVEL": "WARNING"},
            start_concurrency=max(1, self.args.start_concurrency // workers),
            cpus=self.args.fleet_cpus,
        )
        await self.fleet.spawn()
        self.timeline_pids()
        log(f"fleet: {workers} worker processes ready; starting {n} agents ({self.args.start_concurrency} at a time)")
        cpu_before = self.cpu()
        port = self.stack.nats.config.monitor_port if self.stack.nats else 0
        traffic_before = traffic.snapshot(port)
        started = time.time()
        await self.fleet.start()
        want = set(self.clusters)
        fleet_up = self.fleet.up
        progress = asyncio.create_task(self.connect_progress(started, max(2.0, n / 1000)), name="bench-progress")
        ramp = self.nats_slices("connect")
        profiling = asyncio.create_task(ramp.run(), name="bench-nats-profile") if ramp else None
        try:
            await wait_for(lambda: want <= set(self.online), timeout=self.args.connect_timeout, interval=0.2)
        except AssertionError:
            progress.cancel()
            if profiling:
                profiling.cancel()
            # Counted now, not when the wait began.
            raise AssertionError(
                f"not all {n} agents online after {self.args.connect_timeout:g}s: {len(want & set(self.online))} "
                f"online, {len(want & set(fleet_up))} up in their workers"
            ) from None
        last_online = max(self.online[c] for c in self.clusters)
        fleet = self.fleet

        async def all_bound() -> bool:
            return bool((await fleet.stats())["bound"] == n)

        # Online is not yet ready for commands: each agent also looks up (or creates) its command consumer.
        await wait_for(all_bound, timeout=self.args.connect_timeout, interval=1.0, what=f"all {n} command consumers")
        bound_at = time.time()
        cpu_after = self.cpu()
        progress.cancel()
        if profiling:
            profiling.cancel()
        # Idle traffic is not subtracted here (heartbeats start as agents come online: part of connecting).
        per_agent_traffic = traffic.per_command(
            traffic.Window(seconds=1.0), traffic.difference(traffic_before, traffic.snapshot(port)), n
        )
        last_up = max(self.fleet.up[c] for c in self.clusters)
        per_agent = [self.online[c] - started for c in self.clusters]
        self.results["connect"] = {
            "seconds": last_online - started,
            "agents_per_s": n / max(1e-9, last_online - started),
            "last_agent_up_s": last_up - started,
            "all_bound_s": bound_at - started,
            "online_after": summary(per_agent),
            "failed_attempts": len(self.fleet.failed),
            "cpu_s": {p: cpu_after[p] - cpu_before.get(p, 0.0) for p in cpu_after},
            "steps": steps.summary(await self.fleet.steps()),
            "registry_steps": registry_steps(await self.stack.scrape("registry")),
            "traffic": per_agent_traffic,
            "progress": self.progress,
        }
        # What the fleet costs once online and idle (heartbeats, PINGs, pulls): the part of phase 1's CPU the
        # agents already online take from those still connecting. Also the pause before measuring memory.
        idle_slice = self.nats_slices("idle")
        idle, _ = await asyncio.gather(self.idle_cpu(5.0), idle_slice.once() if idle_slice else asyncio.sleep(0))
        self.results["connect"]["idle_cpu_ms_per_s"] = idle
        for line in connect_profile(self.results["connect"]):
            log(f"(1) {line}")
        for name, slices in (("to all bound", ramp), ("idle, all online", idle_slice)):
            if slices is not None:
                for line in await slices.report(name):
                    log(f"(1) {line}")
                self.results["connect"][f"nats_cpu_{slices.label}"] = slices.split.seconds if slices.split else None
        raw = self.results["baseline_connect"]
        raw_s = raw["seconds"] * n / raw["connections"] + raw["seconds_consumers"]
        raw_whole = raw["seconds_creds_read_whole"] * n / raw["connections"] + raw["seconds_consumers"]
        log(
            f"(1) all {n} agents online in {last_online - started:.1f}s, all bound to their command consumer by "
            f"{bound_at - started:.1f}s; raw {n} bare connections + consumers {raw_s:.1f}s: "
            f"{(bound_at - started) / raw_s:.2f}x (with the creds read whole {raw_whole:.1f}s: "
            f"{(bound_at - started) / raw_whole:.2f}x)"
        )
        if "seconds_writes" in raw:
            raw_writes = raw_s + raw["seconds_writes"]
            log(
                f"(1) raw {n} bare connections + consumers + the connect's fsynced writes {raw_writes:.1f}s: "
                f"{(bound_at - started) / raw_writes:.2f}x"
            )
        rss_connected = self.stack.rss()
        self.results["rss_connected"] = rss_connected

        phases = set(self.args.phases.split(","))
        # (2) heartbeats at N agents.
        if "2" in phases:
            await self.heartbeats()

        # Tenants to command (setup).
        t0 = time.monotonic()
        await self.create_tenants()
        self.results["setup_tenants"] = {"tenants": len(self.tenants), "seconds": time.monotonic() - t0}
        log(f"setup: {len(self.tenants)} tenants created and applied in {time.monotonic() - t0:.1f}s")

        # (3) command round trip.
        if "3" in phases:
            await self.commands()

        # (7) messages and stream/KV writes per command, per process.
        if "7" in phases:
            await self.traffic()

        # (6) memory per connected cluster (after the command phases: records and all).
        rss_after = self.stack.rss()
        self.results["memory"] = self.memory(rss_idle, rss_connected, rss_after)

        # (4) offline detection.
        if "4" in phases:
            await self.offline_detection()

        # (5) reconnect storm.
        if "5" in phases:
            await self.storm()

    def nats_slices(self, label: str) -> natsprofile.Slices | None:
        """Profiles of nats-server's CPU for ``label``'s window (``--nats-profile``); None when not asked for."""
        if not self.args.nats_profile:
            return None
        return natsprofile.Slices(self.stack.nats_profiling_port, Path(self.args.nats_profile), label)

    async def connect_progress(self, started: float, every: float) -> None:
        """Phase 1's course: every ``every`` seconds, the agents online and each process's CPU (cores) since the
        last sample (``self.progress``, printed with the connect profile)."""
        ours = set(self.clusters)
        last_cpu, last_t, last_online = self.cpu(), time.time(), 0
        while True:
            await asyncio.sleep(every)  # a sampling period, not a wait for something
            cpu, now = self.cpu(), time.time()
            online = len(ours.intersection(self.online))
            self.progress.append(
                {
                    "t": now - started,
                    "online": online,
                    # Up in their workers (the start returned) but not yet shown online: health's lag.
                    "up": len(ours.intersection(self.fleet.up)) if self.fleet is not None else 0,
                    "per_s": (online - last_online) / (now - last_t),
                    "cores": {k: (v - last_cpu.get(k, 0.0)) / (now - last_t) for k, v in cpu.items()},
                }
            )
            last_cpu, last_t, last_online = cpu, now, online

    async def register(self, clusters: list[str]) -> dict[str, str]:
        assert self.nc is not None
        nc = self.nc
        sem = asyncio.Semaphore(32)

        async def one(name: str) -> tuple[str, str]:
            async with sem:
                info = await call(nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=name), ClusterConnectInfo)
                return name, info.token

        return dict(await asyncio.gather(*(one(c) for c in clusters)))

    async def become_project_user(self, name: str) -> None:
        """From here on the bench calls the API as ``name``, a user of the bench's project (not an admin), who
        then owns the tenants it creates: each command takes a member's path (access asked, the owner checked)."""
        assert self.http is not None
        user = await self.api("POST", "/api/v1/users", json={"name": name})
        await self.api("PUT", f"/api/v1/projects/{PROJECT}/members", json={"user": name, "role": "user"})
        await self.http.close()
        self.http = LeanHttp("127.0.0.1", self.stack.http_port, str(user["token"]), size=256)
        self.results["as_user"] = name
        log(f"commands go through {name!r}, a project user")

    async def create_tenants(self) -> None:
        count = min(self.args.tenants, self.n) if self.args.tenants else min(self.n, 1000)
        await self.api("POST", "/api/v1/projects", json={"name": PROJECT})
        if self.args.as_user:
            await self.become_project_user(self.args.as_user)
        self.tenants = [Tenant(name=f"t{i:05d}", cluster=self.clusters[i % self.n]) for i in range(count)]
        sem = asyncio.Semaphore(8)

        async def one(t: Tenant) -> None:
            async with sem:
                out = await self.api(
                    "POST", f"/api/v1/projects/{PROJECT}/tenants", json={"name": t.name, "cluster": t.cluster}
                )
            await self.observer.wait(t.key, out["desired"]["generation"], 300)

        await asyncio.gather(*(one(t) for t in self.tenants))

    # --- (2) heartbeats ---------------------------------------------------------------------------
    async def heartbeats(self) -> None:
        assert self.nc is not None
        window = self.args.hb_window
        before = histogram(await self.stack.scrape("health"), "tether_heartbeat_lag_seconds")
        t0 = time.monotonic()
        await asyncio.sleep(window)
        after = histogram(await self.stack.scrape("health"), "tether_heartbeat_lag_seconds")
        elapsed = time.monotonic() - t0
        buckets = diff_buckets(after[0], before[0])
        processed = after[1] - before[1]
        steady = {
            "offered_per_s": self.n / 5.0,
            "processed_per_s": processed / elapsed,
            "lag_p50_le": bucket_quantile(buckets, 0.5),
            "lag_p99_le": bucket_quantile(buckets, 0.99),
            "lag_max_le": bucket_quantile(buckets, 1.0),
        }
        log(f"(2) steady: {steady['processed_per_s']:.0f} heartbeats/s processed at {self.n} agents")

        # Capacity: a burst of real-looking heartbeats for the bench's clusters, as fast as NATS takes them;
        # a marker for a cluster of its own follows, and health handles heartbeats in order.
        burst = self.args.hb_burst
        health = ClusterHealth(nodes_ready=3, nodes_total=3, driver="sim", kubernetes_version="v1.36.0-sim")
        sample = encode(Heartbeat(cluster=self.clusters[0], session="bench", seq=1, sent_at=time.time(), health=health))
        before = histogram(await self.stack.scrape("health"), "tether_heartbeat_lag_seconds")
        marker = f"zz-marker-{int(time.time())}"
        t0 = time.time()
        for i in range(burst):
            name = self.clusters[i % self.n]
            hb = Heartbeat(cluster=name, session="bench-burst", seq=i, sent_at=time.time(), health=health)
            await self.nc.publish(subjects.heartbeat(name), encode(hb))
            if i % 1000 == 999:
                await asyncio.sleep(0)
        await self.nc.publish(
            subjects.heartbeat(marker),
            encode(Heartbeat(cluster=marker, session="m", seq=1, sent_at=time.time(), health=health)),
        )
        await self.nc.flush()
        published = time.time()
        nc = self.nc

        async def marker_seen() -> bool:
            try:
                await call(nc, subjects.Health.PRESENCE_GET, NameRequest(name=marker), Presence, timeout=5)
            except Exception:
                return False
            return True

        await wait_for(marker_seen, timeout=300, interval=0.05, what="the burst's marker heartbeat")
        done = time.time()
        after = histogram(await self.stack.scrape("health"), "tether_heartbeat_lag_seconds")
        buckets = diff_buckets(after[0], before[0])
        capacity = {
            "burst": burst,
            "publish_s": published - t0,
            "processed_per_s": burst / (done - t0),
            "lag_p50_le": bucket_quantile(buckets, 0.5),
            "lag_p99_le": bucket_quantile(buckets, 0.99),
        }
        log(f"(2) capacity: {capacity['processed_per_s']:.0f} heartbeats/s")
        raw = await baseline.core_throughput(self.connect, len(sample), burst)
        log(f"(2) baseline: bare core NATS {raw['per_s']:.0f} msgs/s to one Python subscriber")
        self.results["heartbeats"] = {"steady": steady, "capacity": capacity, "baseline_core": raw}

    def timeline_pids(self, extra: dict[str, list[int]] | None = None) -> None:
        """The processes the timeline samples: nats-server, the services, the agents' workers, the bench."""
        if self.timeline is None:
            return
        groups = {name: [pid] for name, pid in self.stack.pids().items()}
        if self.fleet is not None:
            groups["agents"] = self.fleet.pids()
        groups["bench"] = [os.getpid()]
        self.timeline.set_pids(groups | (extra or {}))

    # --- (3) commands ---------------------------------------------------------------------------
    async def command(self, t: Tenant) -> Issued:
        action: Action = "sleep" if t.state == "running" else "wake"
        sent = time.time()
        path = f"/api/v1/projects/{PROJECT}/tenants/{t.name}/{action}"
        if self.without_api:
            desired = await self.lifecycle_action(t, action, path)
        else:
            desired = (await self.api("POST", path))["desired"]
        t.state = "sleeping" if action == "sleep" else "running"
        issued = Issued(tenant=t, generation=desired["generation"], op_id=desired["op_id"], sent=sent)
        self.issued.append(issued)
        return issued

    async def lifecycle_action(self, t: Tenant, action: Action, path: str) -> dict[str, Any]:
        """The platform admin's action sent to lifecycle's endpoint as the API sends it, without the API: the
        same writes, records and audit, one process and one HTTP hop fewer."""
        assert self.nc is not None
        request = WorkloadAction(
            kind="tenant",
            project=PROJECT,
            name=t.name,
            action=action,
            by="admin",
            op_id=uuid.uuid4().hex,
            call=f"POST {path}",
        )
        record = await call(self.nc, subjects.Lifecycle.ACTION, request, WorkloadRecord)
        return {"generation": record.generation, "op_id": record.op_id}

    async def round_trip(self, t: Tenant) -> tuple[float, float, dict[str, float] | None]:
        """(round trip, API call) seconds of one command, and its hops (None when a clock was missed)."""
        issued = await self.command(t)
        api_done = time.time()
        at = await self.observer.wait(t.key, issued.generation, 60)
        stamp = self.observer.stamps.get(t.key)
        hops = stamp.hops(issued.sent, api_done) if stamp and stamp.generation == issued.generation else None
        if self.trace is not None:
            clocks = {"sent": issued.sent, "rt": at - issued.sent, "api": api_done}
            if stamp and stamp.generation == issued.generation:
                clocks |= {"decided": stamp.decided, "published": stamp.published, "applied": stamp.applied}
                clocks["folded"] = stamp.folded
            self.trace.append(clocks)
        return at - issued.sent, api_done - issued.sent, hops

    async def commands(self) -> None:
        """(3): round trips at a fixed rate, then the maximum; with ``--rate 0`` the maximum first and the
        fixed rate at half of it (issue 17's target: p99 at half the platform's own maximum)."""
        free: deque[Tenant] = deque(self.tenants)
        random.shuffle(free)
        if self.args.rate > 0:
            # The setup's creates end just before (one window's first seconds were 3-4x slower than its last):
            # like the half-maximum window, this one starts once the platform's CPU is back to the connected
            # fleet's idle rate (phase 1's).
            settled_s = await self.settle(self.results["connect"]["idle_cpu_ms_per_s"])
            fixed = await self.fixed_rate(free, self.args.rate, "fixed")
            fixed["settled_s"] = settled_s
            top = await self.max_rate(free)
        else:
            top = await self.max_rate(free)
            half = max(1.0, round(top["per_s"] / 2))
            # Right after the maximum, the platform is still draining it (events, inventories, presence); the
            # raw baselines measure their fixed rate from rest. So the rate is measured twice: in the maximum's
            # wake (reported), then, once the platform's CPU is back to its idle rate, the figure compared.
            after_max = await self.fixed_rate(free, half, "wake")
            settled_s = await self.settle(top["idle_cpu_ms_per_s"])
            fixed = await self.fixed_rate(free, half, "settled")
            fixed["after_max"] = after_max
            fixed["settled_s"] = settled_s
        rate, duration = fixed["rate"], self.args.duration
        # Raw JetStream, same message size, same shape (one pull consumer per destination, one at a time).
        size = len(encode(sample_command()))
        async with baseline.JsRoundTrip(self.connect, size) as rt:
            record: list[tuple[float, float]] | None = [] if self.timeline else None
            quiet_heap()
            b_fixed = await rt.fixed_rate(rate, min(duration, 10), record)
            self.timeline_window("raw JetStream", rate, record)
            b_top = await rt.max_rate(self.args.concurrency, min(duration, 10))
        log(f"(3) baseline: JetStream p99 {b_fixed['p99'] * 1e3:.2f} ms at {rate:g}/s; max {b_top['per_s']:.0f}/s")
        self.results["commands"] = {
            "fixed": fixed,
            "max": top,
            "baseline_fixed": b_fixed,
            "baseline_max": b_top,
            "message_bytes": size,
        }
        if self.args.same_writes:
            self.results["commands"]["same_writes"] = await self.same_writes(rate, size)
            if self.args.rounds:
                settled = top["idle_cpu_ms_per_s"]
                self.results["commands"]["rounds"] = await self.interleaved(free, rate, size, settled)

    async def same_writes(self, rate: float, command_bytes: int) -> dict[str, Any]:
        """Raw nats-py doing the platform's writes and hops per command (``tests.bench.samewrites``): its
        maximum, its p99 at the platform's rate and at half its own maximum."""
        assert self.stack.nats is not None
        layout = await self.same_writes_layout(command_bytes)
        duration = min(self.args.duration, 10)
        nats_pid = self.stack.pids()["nats"]
        async with samewrites.SameWrites(layout, self.connect) as sw:
            self.timeline_pids({f"sw-{role}": pids for role, pids in sw.pids().items()})

            def cpu() -> dict[str, float]:
                out = {"nats": steps.cpu_seconds(nats_pid), "bench (client)": steps.cpu_seconds(os.getpid())}
                for role, pids in sw.pids().items():
                    out[role] = sum(steps.cpu_seconds(pid) for pid in pids)
                return out

            top = await sw.max_rate(self.args.concurrency, duration, cpu)
            record: list[tuple[float, float]] | None = [] if self.timeline else None
            quiet_heap()
            at_rate = await sw.fixed_rate(rate, duration, record)
            self.timeline_window("same writes", rate, record)
            quiet_heap()
            own = await sw.fixed_rate(max(1.0, round(top["per_s"] / 2)), duration)
        log(
            f"(3) same-writes baseline ({layout.writes} writes): max {top['per_s']:.0f}/s, p99 {top['p99'] * 1e3:.1f} "
            f"ms; p99 {at_rate['p99'] * 1e3:.1f} ms at {rate:g}/s, {own['p99'] * 1e3:.1f} ms at {own['rate']:g}/s"
        )
        cpu_ms = sorted(top["cpu_ms_per_command"].items())
        log("(3)   CPU ms per command: " + ", ".join(f"{k} {v:.2f}" for k, v in cpu_ms))
        return {"writes": layout.writes, "sizes": layout.sizes, "max": top, "fixed": at_rate, "half_own_max": own}

    async def interleaved(
        self, free: deque[Tenant], rate: float, command_bytes: int, idle: dict[str, float]
    ) -> dict[str, Any]:
        """``--rounds`` rounds of the platform, the same writes and one raw write, each round's windows back
        to back (``tests.bench.rounds``): ratios of sides that shared the hour."""
        assert self.stack.nats is not None
        seconds = min(self.args.duration, 10)
        n = self.args.same_writes_buckets
        layout = await self.same_writes_layout(command_bytes)
        split, what = dataclasses.replace(layout, variant=f"b{n}", buckets=n), f"{n} buckets"
        if self.args.same_writes_views:
            split, what = dataclasses.replace(layout, variant="v", views=True), "lifecycle's views"
        async with contextlib.AsyncExitStack() as stack:
            raw = await stack.enter_async_context(baseline.JsRoundTrip(self.connect, command_bytes))
            sw = await stack.enter_async_context(samewrites.SameWrites(layout, self.connect))
            other = self.args.same_writes_views or (n > 0 and n != layout.buckets)
            sw_split = await stack.enter_async_context(samewrites.SameWrites(split, self.connect)) if other else None
            groups = {f"sw-{role}": pids for role, pids in sw.pids().items()}
            for role, pids in (sw_split.pids() if sw_split else {}).items():
                groups[f"sw-{role}"] = groups.get(f"sw-{role}", []) + pids
            self.timeline_pids(groups)  # the rounds' own same-writes processes (the windows' load lines)

            async def platform_fixed(r: float, s: float) -> list[float]:
                kept: list[float] = []
                await self.fixed_rate(free, r, "round: platform", duration=s, keep=kept)
                return kept

            async def platform_top(s: float) -> tuple[float, float]:
                top = await self.max_rate(free, duration=s)
                return float(top["per_s"]), float(top["cpu_ms_per_command"]["nats"])

            async def without_api(measured: Awaitable[T]) -> T:
                self.without_api = True
                try:
                    return await measured
                finally:
                    self.without_api = False

            async def lat_of(
                label: str, fixed: Callable[..., Awaitable[dict[str, Any]]], r: float, s: float
            ) -> list[float]:
                record: list[tuple[float, float]] = []
                quiet_heap()  # the platform's own windows do this in ``fixed_rate``
                await fixed(r, s, record)
                self.timeline_window(label, r, record)
                return [lat for _, lat in record]

            sides = [
                rounds.Side(rounds.PLATFORM, platform_fixed, platform_top, own_half=True),
                rounds.Side(
                    f"same writes ({self.args.same_writes})",
                    lambda r, s: lat_of("round: same writes", sw.fixed_rate, r, s),
                    lambda s: self._top_of(sw.max_rate(self.args.concurrency, s, lambda: {})),
                    own_half=True,
                ),
                *(
                    [
                        rounds.Side(
                            f"same writes ({self.args.same_writes}), {what}",
                            lambda r, s: lat_of(f"round: same writes, {what}", sw_split.fixed_rate, r, s),
                            lambda s: self._top_of(sw_split.max_rate(self.args.concurrency, s, lambda: {})),
                        )
                    ]
                    if sw_split is not None
                    else []
                ),
                *(
                    [
                        rounds.Side(
                            "platform without the API",
                            lambda r, s: without_api(platform_fixed(r, s)),
                            lambda s: without_api(platform_top(s)),
                            own_half=True,
                        )
                    ]
                    if self.args.without_api
                    else []
                ),
                rounds.Side(
                    rounds.RAW,
                    lambda r, s: lat_of("round: raw JetStream", raw.fixed_rate, r, s),
                    lambda s: self._top_of(raw.max_rate(self.args.concurrency, s)),
                ),
            ]

            done = await rounds.measure(sides, self.args.rounds, rate, seconds, lambda: self.settle(idle), log)
        out = rounds.summarize(done, rate)
        for line in rounds.render(out):
            log(f"(3) {line}")
        return out

    async def _top_of(self, top: Awaitable[dict[str, Any]]) -> tuple[float, float]:
        """A baseline's maximum: commands per second, and nats-server's CPU ms per command meanwhile."""
        nats_pid = self.stack.pids()["nats"]
        cpu0 = steps.cpu_seconds(nats_pid)
        out = await top
        used = steps.cpu_seconds(nats_pid) - cpu0
        return float(out["per_s"]), used * 1e3 / max(1, out["count"])

    async def same_writes_layout(self, command_bytes: int) -> samewrites.Layout:
        """The same-writes baseline's shape: the platform's cluster count and record sizes."""
        assert self.nc is not None
        first = self.tenants[0]
        bucket = await self.nc.jetstream().key_value(subjects.desired_bucket(first.cluster))
        entry = await bucket.get(f"{first.cluster}.{first.key}")
        return samewrites.Layout(
            url=self.stack.nats_url,
            creds=str(self.stack.auth / "platform.creds"),
            clusters=len(self.tenants),
            writes=self.args.same_writes,
            sizes={"record": len(entry.value or b""), "command": command_bytes, "small": 320},
            buckets=subjects.DESIRED_SHARDS,  # as the platform's desired state
        )

    def timeline_window(self, label: str, rate: float, record: list[tuple[float, float]] | None) -> None:
        if self.timeline is not None and record is not None:
            self.timeline.window(label, rate, [{"sent": sent, "rt": rt} for sent, rt in record])

    async def fixed_rate(
        self,
        free: deque[Tenant],
        rate: float,
        label: str,
        duration: float | None = None,
        keep: list[float] | None = None,
    ) -> dict[str, Any]:
        """Commands at ``rate`` for ``duration`` seconds (``--duration``); their round trips are added to
        ``keep`` too."""
        duration = duration or self.args.duration
        rts: list[float] = []
        apis: list[float] = []
        hops: list[tuple[float, dict[str, float]]] = []
        sent: list[float] = []
        errors = 0
        skipped = 0

        async def shot(t: Tenant) -> None:
            nonlocal errors
            try:
                rt, api, hop = await self.round_trip(t)
                rts.append(rt)
                apis.append(api)
                if hop is not None:
                    hops.append((rt, hop))
                    sent.append(time.monotonic() - rt - t0)
            except Exception as exc:
                errors += 1
                log(f"command failed: {exc!r}")
            finally:
                free.append(t)

        tasks = []
        count = int(rate * duration)
        quiet_heap()
        t0, started_at = time.monotonic(), time.time()
        self.trace = [] if self.timeline else None
        with GcPauses() as pauses:
            for i in range(count):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if not free:
                    skipped += 1
                    continue
                tasks.append(asyncio.create_task(shot(free.popleft())))
            await asyncio.gather(*tasks)
        if self.timeline is not None and self.trace is not None:
            self.timeline.window(label, rate, self.trace)
        self.trace = None
        if keep is not None:
            keep.extend(rts)
        fixed = {"rate": rate, "seconds": duration, **summary(rts), "api": summary(apis), "errors": errors}
        fixed["client_gc"] = pauses.summary()
        fixed["skipped"] = skipped
        fixed["hops"] = hop_profile(hops, sent)
        # The window's start on the wall clock: to set the slowest commands' send times beside other records
        # of the run (a CPU timeline, services' logs).
        fixed["started_at"] = started_at
        window = time.strftime("%H:%M:%S", time.localtime(started_at)) + f".{int(started_at % 1 * 1000):03d}"
        log(f"(3) {rate:g}/s: p50 {fixed['p50'] * 1e3:.1f} ms, p99 {fixed['p99'] * 1e3:.1f} ms (window from {window})")
        for line in render_hops(fixed["hops"]):
            log(f"(3)   {line}")
        gcs = fixed["client_gc"]
        log(
            f"(3)   the bench client's GC: {gcs['collections']} collections, {gcs['full']} full, "
            f"longest {gcs['max_ms']:.1f} ms"
        )
        return fixed

    async def max_rate(self, free: deque[Tenant], duration: float | None = None) -> dict[str, Any]:
        """Max throughput: closed loop, `concurrency` commands in flight, for ``duration`` (``--duration``)."""
        rts2: list[float] = []
        errors2 = 0

        async def loop() -> None:
            nonlocal errors2
            while time.monotonic() < stop_at:
                if not free:
                    await asyncio.sleep(0.01)
                    continue
                t = free.popleft()
                try:
                    rts2.append((await self.round_trip(t))[0])
                except Exception as exc:
                    errors2 += 1
                    log(f"command failed: {exc!r}")
                finally:
                    free.append(t)

        idle = await self.idle_cpu(IDLE_CPU_WINDOW)
        t0 = time.monotonic()
        # From here, not from the call: the idle window above used to eat 5 s of the loop's time.
        stop_at = t0 + (duration or self.args.duration)
        cpu0 = self.cpu()
        await asyncio.gather(*(loop() for _ in range(self.args.concurrency)))
        elapsed = time.monotonic() - t0
        done = max(1, len(rts2))
        # CPU per command by process: where the work of one command goes at saturation.
        cpu_ms = {k: (v - cpu0.get(k, 0.0)) * 1e3 / done for k, v in self.cpu().items()}
        # The same less what the process spends with no commands at all (heartbeats, pings, idle fetches of
        # every agent): what one more command costs. For the agents' workers, what a real agent (a process of
        # its own) spends on a command, its idle share not multiplied by the hundreds packed beside it.
        beyond = {k: v - idle.get(k, 0.0) * elapsed / done for k, v in cpu_ms.items()}
        top = {
            "concurrency": self.args.concurrency,
            "per_s": len(rts2) / elapsed,
            **summary(rts2),
            "errors": errors2,
            "cpu_ms_per_command": cpu_ms,
            "idle_cpu_ms_per_s": idle,
            "cpu_ms_per_command_beyond_idle": beyond,
        }
        log(f"(3) max: {top['per_s']:.0f} commands/s, p99 {top['p99'] * 1e3:.1f} ms")
        log("(3)   CPU ms per command: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(cpu_ms.items())))
        log("(3)   idle CPU ms per s: " + ", ".join(f"{k} {v:.1f}" for k, v in sorted(idle.items())))
        log("(3)   CPU ms per command beyond idle: " + ", ".join(f"{k} {v:.2f}" for k, v in sorted(beyond.items())))
        return top

    async def settle(self, idle: dict[str, float]) -> float:
        """Seconds until the platform's CPU (every process but the bench's own) is back within 25 % (+50 ms/s)
        of its rate before the maximum, measured over 1 s windows; at most ``SETTLE_DEADLINE``."""

        def total(cpu_ms_per_s: dict[str, float]) -> float:
            return sum(v for k, v in cpu_ms_per_s.items() if k != "bench (client)")

        limit = total(idle) * 1.25 + 50.0
        t0 = time.monotonic()
        now = limit + 1.0
        while time.monotonic() - t0 < SETTLE_DEADLINE:
            now = total(await self.idle_cpu(1.0))
            if now <= limit:
                break
        waited = time.monotonic() - t0
        state = "settled" if now <= limit else "NOT settled"
        log(f"(3) {state} after {waited:.1f}s: {now:.0f} ms/s of CPU (idle {total(idle):.0f})")
        return waited

    async def idle_cpu(self, seconds: float) -> dict[str, float]:
        """CPU ms per second of each process while no command is sent (the fleet connected and idle)."""
        cpu0, t0 = self.cpu(), time.monotonic()
        await asyncio.sleep(seconds)  # a measuring window, not a wait for something
        elapsed = time.monotonic() - t0
        return {k: (v - cpu0.get(k, 0.0)) * 1e3 / elapsed for k, v in self.cpu().items()}

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by nats-server, each service and the agents' worker processes."""
        out = {name: steps.cpu_seconds(pid) for name, pid in self.stack.pids().items()}
        if self.fleet is not None:
            out["agents (workers)"] = sum(steps.cpu_seconds(pid) for pid in self.fleet.pids())
        out["bench (client)"] = steps.cpu_seconds(os.getpid())
        return out

    # --- (7) messages and writes per command -----------------------------------------------------------
    async def traffic(self) -> None:
        """Commands at a modest fixed rate (one per tenant, never two in flight for one) beside an idle
        window of the same length; nats-server's counters say what each process sent and wrote."""
        assert self.nc is not None and self.stack.nats is not None
        rate, seconds = min(self.args.rate or 50.0, 50.0), self.args.profile_window
        chosen = balanced(self.tenants, int(rate * seconds))
        actions = {t.name: "sleep" if t.state == "running" else "wake" for t in chosen}

        async def work() -> int:
            done = 0

            async def shot(t: Tenant) -> None:
                nonlocal done
                try:
                    await self.round_trip(t)
                    done += 1
                except Exception as exc:
                    log(f"command failed: {exc!r}")

            tasks = []
            t0 = time.monotonic()
            for i, t in enumerate(chosen):
                delay = t0 + i / rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(shot(t)))
            await asyncio.gather(*tasks)
            return done

        objects = {
            WorkloadRef(kind="tenant", project=PROJECT, name=t.name): (t.cluster, actions[t.name]) for t in chosen
        }
        profile = await traffic.measure(
            self.stack.nats.config.monitor_port,
            self.nc,
            seconds,
            work,
            traffic.of_objects(objects),
            group_sizes=dict(Counter(actions.values())),
        )
        self.results["traffic"] = profile
        for line in traffic.render(profile):
            log(f"(7) {line}")

    # --- (6) memory --------------------------------------------------------------------------------
    def memory(self, idle: dict[str, int], connected: dict[str, int], after: dict[str, int]) -> dict[str, Any]:
        services = [s for s in SERVICES if s in idle]
        grow_connected = sum(connected.get(s, 0) - idle[s] for s in services)
        grow_after = sum(after.get(s, 0) - idle[s] for s in services)
        per = {s: (after.get(s, 0) - idle[s]) / self.n for s in services}
        return {
            "services_idle": sum(idle[s] for s in services),
            "services_bytes_per_cluster_connected": grow_connected / self.n,
            "services_bytes_per_cluster": grow_after / self.n,
            "per_service_bytes_per_cluster": per,
            "nats_bytes_per_cluster": (after.get("nats", 0) - idle.get("nats", 0)) / self.n,
            "nats_bytes_per_cluster_connected": (connected.get("nats", 0) - idle.get("nats", 0)) / self.n,
        }

    # --- (4) offline detection ------------------------------------------------------------------------
    async def offline_detection(self) -> None:
        assert self.fleet is not None
        k = self.args.kill or max(5, min(100, self.n // 20))
        victims = random.sample(self.clusters, min(k, self.n))
        for c in victims:
            self.offline.pop(c, None)
        beats = await self.fleet.kill(victims)
        killed_at = time.time()
        with contextlib.suppress(AssertionError):
            await wait_for(lambda: all(c in self.offline for c in victims), timeout=60, interval=0.1)
        detect = [self.offline[c] - beats[c] for c in victims if c in self.offline and beats.get(c)]
        missing = [c for c in victims if c not in self.offline]
        self.results["offline"] = {
            "killed": len(victims),
            "detected": len(detect),
            "missing": missing,
            **summary(detect),
            "after_kill": summary([self.offline[c] - killed_at for c in victims if c in self.offline]),
            "bound": 12.0 + 1.0,
        }
        log(f"(4) offline: {len(detect)}/{len(victims)} detected; max {max(detect, default=math.nan):.2f}s")
        # Bring them back (their stored credentials; no token needed).
        for c in victims:
            self.online.pop(c, None)
        await self.fleet.start(victims)
        await wait_for(lambda: all(c in self.online for c in victims), timeout=120, interval=0.2, what="revived")

    # --- (5) reconnect storm -------------------------------------------------------------------------
    async def desired_buckets(self, deadline: float) -> dict[str, KeyValue]:
        """The desired-state buckets by name, looked up again until ``deadline``: right after the restart the
        JetStream API is busy with every agent's reconnect and one stream-info request can time out (it ended a
        10,000 run before anything was measured)."""
        assert self.nc is not None
        while True:
            try:
                js = self.nc.jetstream()
                return {b: await js.key_value(b) for b in subjects.DESIRED_BUCKETS}
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise
                log(f"(5) the desired-state bucket not looked up yet: {exc!r}; again")
                await asyncio.sleep(0.5)

    async def storm(self) -> None:
        assert self.fleet is not None and self.nc is not None
        pending_n = min(len(self.tenants), self.args.pending or len(self.tenants))
        targets = random.sample(self.tenants, pending_n)
        await self.fleet.gate(False)
        await asyncio.sleep(1)
        sem = asyncio.Semaphore(32)

        async def issue(t: Tenant) -> Issued:
            async with sem:
                return await self.command(t)

        pending = await asyncio.gather(*(issue(t) for t in targets))
        log(f"(5) {len(pending)} commands issued and held back; restarting NATS and the services")
        await self.fleet.steps(clear=True)  # from here on, the agents' steps of the restart only
        stop_t = time.time()
        for name in reversed(SERVICES):
            self.stack.services[name].stop()
        assert self.stack.nats is not None
        self.stack.nats.stop()
        await self.fleet.gate(True)
        await asyncio.sleep(self.args.outage)
        t0 = time.time()
        accepts: list[accepting.Sample] = []
        config = self.stack.nats.config
        helpers = [asyncio.create_task(accepting.sample(config.monitor_port, config.port, t0, 0.5, accepts))]
        restart = self.nats_slices("restart")
        try:
            self.stack.nats.start()
            await self.stack.nats.wait_ready(120)
            for name in SERVICES:
                self.stack.restart_service(name)
            nats_ready = time.time()
            helpers.append(asyncio.create_task(self.services_answering(t0)))
            helpers.append(asyncio.create_task(self.supervise(t0)))
            if restart is not None:
                helpers.append(asyncio.create_task(restart.run(), name="bench-nats-profile"))
            cpu_start = self.cpu()
            log(f"(5) NATS back after {nats_ready - t0:.1f}s; waiting for {self.n} agents")

            back = resynced = applied = 0.0
            observed: set[str] = set()
            deadline = time.monotonic() + self.args.storm_timeout
            buckets = await self.desired_buckets(deadline)
            stats: dict[str, Any] = {}
            while time.monotonic() < deadline and not (back and resynced and applied):
                await asyncio.sleep(0.5)
                now = time.time()
                try:
                    stats = await self.fleet.stats(since=stop_t)
                except Exception as exc:
                    log(f"stats: {exc!r}")
                    continue
                if not back and stats["reconnected"] >= self.n and stats["connected"] >= self.n:
                    try:
                        presence = await self.presence()
                    except Unavailable as exc:  # health still starting (it loads every cluster's presence first)
                        log(f"(5) presence not read: {exc.description}")
                        continue
                    if sum(1 for p in presence.values() if p.online and p.last_seen > t0) >= self.n:
                        back = now
                        log(f"(5) all agents back after {back - t0:.1f}s")
                if back and not resynced and stats["inventoried"] >= self.n:
                    with contextlib.suppress(Exception):
                        info = await self.nc.jetstream().consumer_info(
                            subjects.EVT_STREAM, subjects.LIFECYCLE_INVENTORY_CONSUMER
                        )
                        if info.num_pending == 0 and info.num_ack_pending == 0:
                            resynced = now
                            log(f"(5) all inventories reconciled after {resynced - t0:.1f}s")
                if not applied:
                    for p in pending:
                        if p.tenant.key in observed:
                            continue
                        if self.observer.seen(p.tenant.key, p.generation):
                            observed.add(p.tenant.key)
                    if len(observed) < len(pending):
                        for p in [p for p in pending if p.tenant.key not in observed][:200]:
                            with contextlib.suppress(Exception):
                                bucket = buckets[subjects.desired_bucket(p.tenant.cluster)]
                                entry = await bucket.get(f"{p.tenant.cluster}.{p.tenant.key}")
                                rec = decode(entry.value or b"", WorkloadRecord)
                                if rec.observed is not None and rec.observed.generation >= p.generation:
                                    observed.add(p.tenant.key)
                    if len(observed) >= len(pending):
                        applied = now
                        log(f"(5) all {len(pending)} pending commands applied after {applied - t0:.1f}s")
            lost, twice = self.check_ledgers(pending)
        finally:
            for helper in helpers:  # also when the storm fails: no sampler left polling
                helper.cancel()
        # Health marking a cluster offline and online again costs two fsynced writes and two public events.
        marks = {c: at for c, at in self.offline.items() if at >= t0}
        marked_offline = len(marks)
        silences = await self.fleet.silences(marks, since=stop_t) if marks else {}
        done = max(back, resynced, applied) if back and resynced and applied else math.nan
        self.results["storm"] = {
            "agents": self.n,
            "pending_commands": len(pending),
            "outage_s": t0 - stop_t,
            "nats_ready_s": nats_ready - t0,
            "back_s": back - t0 if back else math.nan,
            "resynced_s": resynced - t0 if resynced else math.nan,
            "applied_s": applied - t0 if applied else math.nan,
            "total_s": done - t0 if back and resynced and applied else math.nan,
            "lost": lost,
            "applied_twice": twice,
            "marked_offline": marked_offline,
            "marked_offline_silences": offline_silences(silences, marks, t0),
            "last_stats": stats,
            "profile": await self.restart_profile(t0, cpu_start),
        }
        self.results["storm"]["profile"]["services_answering_s"] = dict(self.answering)
        self.results["storm"]["profile"]["service_exits"] = list(self.exits)
        for line in restart_profile(self.results["storm"]["profile"]):
            log(f"(5) {line}")
        for line in accepting.lines(accepts, self.n):
            log(f"(5) {line}")
        log(f"(5) clusters health marked offline since NATS started: {marked_offline}")
        if restart is not None:
            for line in await restart.report("from its start to all back and applied"):
                log(f"(5) {line}")
            self.results["storm"]["nats_cpu"] = restart.split.seconds if restart.split else None
        if marks:
            log(f"(5)   {silence_line(self.results['storm']['marked_offline_silences'])}")
        log(f"(5) storm: total {self.results['storm']['total_s']:.1f}s; lost {lost}, twice {twice}")

    async def services_answering(self, t0: float) -> None:
        """When each service answered its first ``$SRV.PING`` after NATS was started (``self.answering``):
        until then requests to it get no responders."""
        assert self.nc is not None
        self.answering.clear()
        while len(self.answering) < len(SERVICES):
            for name in [n for n in SERVICES if n not in self.answering]:
                with contextlib.suppress(Exception):
                    await self.nc.request(f"$SRV.PING.tether-{name}", b"", timeout=0.5)
                    self.answering[name] = time.time() - t0
                    log(f"(5) {name} answers after {self.answering[name]:.1f}s")
            await asyncio.sleep(0.1)

    async def supervise(self, t0: float) -> None:
        """Start again a service that ended, after the delay ``tether up``'s supervisor waits (the benchmark
        measures the platform as it runs), and say so: the restart's figures then include its next start."""
        self.exits.clear()
        due: dict[str, float] = {}
        while True:
            for name in SERVICES:
                proc = self.stack.services[name]
                if proc.proc is None or proc.proc.poll() is None:
                    continue
                if name not in due:
                    after = time.time() - t0
                    restarts = sum(1 for e in self.exits if e["service"] == name)
                    delay = backoff_delay(min(restarts, 6), base=0.5, cap=10.0)
                    self.exits.append({"service": name, "code": proc.proc.returncode, "after_s": after})
                    log(
                        f"(5) {name} ended (exit code {proc.proc.returncode}) after {after:.1f}s; again in {delay:.1f}s"
                    )
                    due[name] = time.monotonic() + delay
                elif time.monotonic() >= due[name]:
                    del due[name]
                    self.stack.restart_service(name)
            await asyncio.sleep(0.5)

    async def restart_profile(self, t0: float, cpu_start: dict[str, float]) -> dict[str, Any]:
        """Where the restart's time went: each agent's reconnect, hello and inventory after NATS was started
        again, the agents' steps since, the registry's hello steps, CPU by process since the services were
        started again."""
        assert self.fleet is not None
        cpu_end = self.cpu()
        return {
            "after_start": {what: summary(v) for what, v in (await self.fleet.times(since=t0)).items()},
            "steps": steps.summary(await self.fleet.steps()),
            "registry_steps": registry_steps(await self.stack.scrape("registry")),
            "cpu_s": {p: cpu_end[p] - cpu_start.get(p, 0.0) for p in cpu_end},
        }

    def check_ledgers(self, pending: list[Issued]) -> tuple[int, int]:
        """Commands (of this run) missing from, or twice in, their cluster's apply ledger."""
        by_cluster: dict[str, list[Issued]] = {}
        for p in self.issued:
            by_cluster.setdefault(p.tenant.cluster, []).append(p)
        lost = twice = 0
        for cluster, issued in by_cluster.items():
            ledger = read_state(self.state_root / cluster)["log"]
            seen: dict[str, int] = {}
            for entry in ledger:
                seen[entry["op_id"]] = seen.get(entry["op_id"], 0) + 1
            for p in issued:
                count = seen.get(p.op_id, 0)
                if count == 0:
                    lost += 1
                elif count > 1:
                    twice += 1
        return lost, twice

    async def cleanup(self) -> None:
        if self.http is not None:
            await self.http.close()
        if self.fleet is not None:
            with contextlib.suppress(Exception):
                await self.fleet.stop()
            self.fleet.kill9()
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.close()
        self.stack.stop()
        if self.timeline is not None:
            self.timeline.close(self.stack.nats.log_path if self.stack.nats else None)
        shutil.rmtree(self.state_root, ignore_errors=True)
        if not self.args.keep and not self.args.work_dir:
            shutil.rmtree(self.root, ignore_errors=True)


def connect_profile(c: dict[str, Any]) -> list[str]:
    """Lines: CPU by process over phase 1, and each connect step's calls and times."""
    took = max(c.get("all_bound_s", 0.0), 1e-9)
    cpu = ", ".join(
        f"{p} {v:.1f}s ({v / took:.0%})" for p, v in sorted(c.get("cpu_s", {}).items(), key=lambda x: -x[1])
    )
    lines = [f"CPU over the {took:.1f}s to all bound: {cpu}"]
    lines += [
        f"  at {p['t']:.0f}s: {p['online']} online ({p['per_s']:.0f}/s), {p.get('up', 0)} up; cores: "
        + ", ".join(f"{k} {v:.2f}" for k, v in sorted(p["cores"].items(), key=lambda x: -x[1]) if v >= 0.01)
        for p in c.get("progress", [])
    ]
    if "idle_cpu_ms_per_s" in c:
        lines.append(f"idle, all online: CPU ms per s: {cpu_text(c['idle_cpu_ms_per_s'])}")
    if "traffic" in c:
        lines += traffic.render(c["traffic"], "agent connect", "heartbeats of the online agents included")
    return lines + step_lines(c.get("steps", {}), c.get("registry_steps", {}))


def balanced(tenants: list[Tenant], count: int) -> list[Tenant]:
    """``count`` tenants at random, as many running (their command is a sleep) as sleeping (a wake) where the
    fleet has them: a wake and a sleep need not make the same writes (a wake made one more while requests were
    announced too), and the earlier phases leave most tenants running, so a random pick measured sleeps."""
    running = [t for t in tenants if t.state == "running"]
    sleeping = [t for t in tenants if t.state != "running"]
    random.shuffle(running)
    random.shuffle(sleeping)
    half = min(count // 2, len(running), len(sleeping))
    chosen = running[:half] + sleeping[:half]
    rest = running[half:] + sleeping[half:]
    chosen += rest[: max(0, count - len(chosen))]
    random.shuffle(chosen)
    return chosen


def cpu_ms_each(before: dict[str, float], after: dict[str, float], count: int) -> dict[str, float]:
    """CPU milliseconds per item of each process between two ``Bench.cpu()`` readings."""
    return {k: (v - before.get(k, 0.0)) * 1e3 / max(1, count) for k, v in after.items()}


def cpu_text(ms: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in sorted(ms.items(), key=lambda x: -x[1]) if v >= 0.005) or "-"


OFFLINE_AFTER = float(PROD_ENV["TETHER_OFFLINE_AFTER"])


def offline_silences(silences: dict[str, float], marks: dict[str, float], t0: float) -> dict[str, Any]:
    """How long each cluster's agent had itself sent no heartbeat when health marked it offline: a mark after
    less than ``OFFLINE_AFTER`` is the platform's (it did not hear a cluster that spoke); after longer, the
    agent was silent (not reconnected yet, or its worker too busy to beat: the fleet shares the cores)."""
    silent = [s for s in silences.values() if s >= OFFLINE_AFTER]
    none_since = [c for c, s in silences.items() if s >= marks[c] - t0]
    return {
        "agent_silent": len(silent),
        "agent_silent_s": summary(silent),
        "no_beat_since_nats_started": len(none_since),
        "agent_beating": sorted(s for s in silences.values() if s < OFFLINE_AFTER),
    }


def silence_line(s: dict[str, Any]) -> str:
    silent = s["agent_silent_s"]
    return (
        f"of them, {s['agent_silent']} after their agent had sent nothing for ≥ {OFFLINE_AFTER:g} s (p50 "
        f"{silent.get('p50', math.nan):.1f} s, max {silent.get('max', math.nan):.1f} s; "
        f"{s['no_beat_since_nats_started']} none since NATS started), {len(s['agent_beating'])} while their "
        f"agent was beating (the platform's)"
    )


def restart_profile(p: dict[str, Any]) -> list[str]:
    """Lines: when agents reconnected, said hello and sent their inventory after NATS started; their steps; the
    registry's; CPU by process."""
    lines = [
        f"agents' {what} after NATS started: {s['count']} agents, p50 {s['p50']:.1f} s, p99 {s['p99']:.1f} s, "
        f"last {s['max']:.1f} s"
        for what, s in p.get("after_start", {}).items()
        if s.get("count")
    ]
    answering = ", ".join(f"{k} {v:.1f} s" for k, v in sorted(p.get("services_answering_s", {}).items()))
    lines.append(f"services answering after NATS started: {answering or '?'}")
    for e in p.get("service_exits", []):
        lines.append(f"service ended and started again: {e['service']} (exit code {e['code']}) at {e['after_s']:.1f} s")
    cpu = ", ".join(f"{k} {v:.1f}s" for k, v in sorted(p.get("cpu_s", {}).items(), key=lambda x: -x[1]))
    lines.append(f"CPU since the services started again: {cpu}")
    lines += step_lines(p.get("steps", {}), p.get("registry_steps", {}))
    return lines


def step_lines(agent_steps: dict[str, Any], registry: dict[str, Any]) -> list[str]:
    """One line per agent step (calls, p50, p99, max, agent-seconds) and per registry step (calls, mean)."""
    lines = [
        f"  {step}: {s['calls']:.0f} calls, p50 {s['p50'] * 1e3:.1f} ms, p99 {s['p99'] * 1e3:.1f} ms, "
        f"max {s['max'] * 1e3:.0f} ms, {s['total_s']:.1f} agent-s"
        for step, s in agent_steps.items()
    ]
    lines += [
        f"  registry, {step}: {s['count']:.0f} calls, mean {s['mean'] * 1e3:.1f} ms, "
        f"p50 ≤ {s['p50_le'] * 1e3:g} ms, p99 ≤ {s['p99_le'] * 1e3:g} ms"
        for step, s in registry.items()
    ]
    return lines


def registry_steps(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, dict[str, float]]:
    """Per step of the registry's bootstrap handler (its ``tether.registry.bootstrap.step`` histogram):
    calls, mean seconds, and the bucket bounds holding p50 and p99."""
    name = "tether_registry_bootstrap_step_seconds"
    out: dict[str, dict[str, float]] = {}
    for step in sorted({labels["step"] for n, labels, _ in samples if n.startswith(name) and "step" in labels}):
        mine = [(n, labels, v) for n, labels, v in samples if labels.get("step") == step]
        buckets, count = histogram(mine, name)
        total = sum(v for n, _labels, v in mine if n == f"{name}_sum")
        out[step] = {
            "count": count,
            "mean": total / count if count else math.nan,
            "p50_le": bucket_quantile(buckets, 0.5),
            "p99_le": bucket_quantile(buckets, 0.99),
        }
    return out


async def _quiet(_exc: Exception) -> None:
    """The benchmark's own connections are expected to lose NATS in the storm."""


def sample_command() -> Command:
    spec = WorkloadSpec(
        kind="tenant",
        project=PROJECT,
        name="t00001",
        cluster="c00001",
        state="sleeping",
        version="v1.36",
        resources=Resources(cpu=1.0, memory=2 * 1024**3),
        members=(Member(subject="user:admin", access="admin"),),
        quota=Quota(),
    )
    return Command(op_id="0" * 32, generation=2, spec=spec, issued_at=time.time(), operation="sleep")


def machine() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {"nproc": os.cpu_count(), "memory_bytes": mem, "cpu": cpu, "python": pyplatform.python_version()}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    p.add_argument("--json", help="write the results here")
    p.add_argument("--workers", type=int, default=0, help="worker processes (default: N/2500, at least 2)")
    p.add_argument("--tenants", type=int, default=0, help="tenants to command (default: min(N, 1000))")
    p.add_argument(
        "--rate", type=float, default=100.0, help="fixed command rate (default 100/s; 0: half the measured maximum)"
    )
    p.add_argument("--duration", type=float, default=20.0, help="seconds per command phase")
    p.add_argument("--concurrency", type=int, default=64, help="commands in flight at max throughput")
    p.add_argument(
        "--same-writes",
        type=int,
        default=4,
        choices=(0, 4, 5, 6),
        help="stream + KV writes per command of the raw same-writes baseline in phase 3 (4, the default: the "
        "platform's chain today, desired state twice, audit, event; 5: with a result stream; 6: and the command "
        "copied to a stream, the chain of early 2026-12; 0: not run)",
    )
    p.add_argument(
        "--without-api",
        action="store_true",
        help="with --rounds: one more side, the platform's commands sent straight to lifecycle's endpoint over "
        "NATS as the API sends them (the API's share of the round trip)",
    )
    p.add_argument(
        "--rounds",
        type=int,
        default=0,
        help="after phase 3, this many interleaved rounds of the platform, the same writes and one raw write, "
        "each round's windows back to back (needs --same-writes; tests/bench/rounds.py)",
    )
    p.add_argument(
        "--same-writes-buckets",
        type=int,
        default=0,
        help="with --rounds: one more side, the same writes with the desired state spread over this many buckets "
        "instead of the platform's 16 (1: one bucket, as before 2026-12-04's nineteenth stop; each agent's consumer "
        "walks its bucket's writes)",
    )
    p.add_argument(
        "--same-writes-views",
        action="store_true",
        help="with --rounds: one more side, the same writes with their lifecycle also watching every bucket as the "
        "platform's lifecycle keeps its views (each write delivered back to it); instead of --same-writes-buckets",
    )
    p.add_argument(
        "--as-user",
        default="",
        metavar="NAME",
        help="create the tenants and send the commands as NAME, a project user, instead of the platform admin "
        "(a member's path: access asked on each command, the owner checked by lifecycle)",
    )
    p.add_argument("--hb-window", type=float, default=10.0, help="seconds the steady heartbeat rate is measured")
    p.add_argument("--hb-burst", type=int, default=20000, help="heartbeats in the capacity burst")
    p.add_argument("--kill", type=int, default=0, help="agents killed for offline detection (default N/20)")
    p.add_argument("--pending", type=int, default=0, help="commands pending in the storm (default: all tenants)")
    p.add_argument("--outage", type=float, default=2.0, help="seconds NATS stays down in the storm")
    p.add_argument(
        "--start-concurrency",
        type=int,
        default=400,
        help="first connects in flight at once over all workers (each trades its one-time token with the "
        "registry; default 400)",
    )
    p.add_argument(
        "--bare-all",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open as many bare connections as there are agents for the baseline (default; --no-bare-all: "
        "at most 1,000, timed, and the rate scaled)",
    )
    p.add_argument("--connect-timeout", type=float, default=900.0)
    p.add_argument("--storm-timeout", type=float, default=600.0)
    p.add_argument("--phases", default="2,3,4,5,7", help="which of the phases 2-5 and 7 to run (1 and 6 always run)")
    p.add_argument(
        "--profile-window", type=float, default=5.0, help="seconds of commands (and as many idle) in phase 7"
    )
    p.add_argument(
        "--fleet-cpus",
        type=cpu_list,
        default=None,
        metavar="LIST",
        help="run the simulated agents on these CPUs (e.g. 1 or 2-3) and everything else (nats-server, the "
        "services, the load generator, the baselines) on the others: the platform on cores of its own, as in a "
        "deployment, where each agent runs on its own cluster (default: all on the same cores). The clients of "
        "the connect's yardstick (bare connections, consumers) run on the fleet's CPUs too, as the agents do",
    )
    p.add_argument(
        "--nats-profile",
        metavar="DIR",
        help="profile nats-server's own CPU (its Go profiler, in 5 s slices) through the connect, the idle fleet "
        "and the restart, keep the profiles here and print each activity's share (reading them needs Go)",
    )
    p.add_argument("--work-dir", help="emptied, then everything is kept here (default: a temporary dir, removed)")
    p.add_argument("--keep", action="store_true", help="keep the temporary work dir (logs)")
    p.add_argument(
        "--timeline",
        help="sample every process, the disk and the machine every 50 ms and keep phase 3's commands and "
        "nats-server's collections here (python -m tests.bench.timeline show DIR)",
    )
    return p.parse_args(argv)


def cpu_list(text: str) -> frozenset[int]:
    """``1``, ``2-3`` or ``0,2-3`` as a set of CPUs this process may run on, at least one left for the rest."""
    cpus: set[int] = set()
    try:
        for part in text.split(","):
            first, dash, last = part.partition("-")
            cpus.update(range(int(first), int(last if dash else first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a CPU list: {text!r} (e.g. 1, 2-3 or 0,2-3)") from None
    allowed = os.sched_getaffinity(0)
    if not cpus or not cpus <= allowed:
        raise argparse.ArgumentTypeError(f"CPUs {text!r} are not all among this process's {sorted(allowed)}")
    if not allowed - cpus:
        raise argparse.ArgumentTypeError(f"CPUs {text!r} leave none for the platform")
    return frozenset(cpus)


def main(argv: list[str] | None = None) -> int:
    from tests.bench.report import render
    from tests.bench.targets import targets

    args = parse_args(argv)
    if args.fleet_cpus:
        # Before any thread or child: nats-server, the services and the baselines' processes inherit it.
        os.sched_setaffinity(0, os.sched_getaffinity(0) - args.fleet_cpus)
    bench = Bench(args)
    try:
        results = asyncio.run(bench.run())
    except (KeyboardInterrupt, asyncio.CancelledError):
        return 130
    results["targets"] = [dataclasses.asdict(t) for t in targets(results)]
    print(render(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str, allow_nan=True))
    return 0
