"""Raw nats-py making the fsynced writes the platform makes for each agent that connects, at the platform's
concurrency, from several processes: the part of phase 1 that is nats-server's own durable writes, beside
the bare connections and consumer creations of the connect baseline.

Per agent (phase 1 counts 6.0 stream + KV writes per agent connect on the platform)::

    "registry" (64 at a time over all processes, as its bootstraps), in turn:
        read the cluster's record, create its UID key (1), write its record (2), publish "connected" (3)
    "health" (32 at a time, as its transition lanes), in turn:
        write its presence (4), publish "online" (5)
    "agent" (every agent at once): publish its inventory (6)

Every stream has file storage and a duplicate window, every publish a message id; ``sync_interval: always``
is the server's (the benchmark's server is the platform's). The chains of one agent do not wait for each other
(on the platform health hears the first heartbeat while the bootstrap's event is still being written).

Run as ``python -m tests.bench.connectwrites <config>`` children: each connects, prints ``ready``, waits for a
line on its standard input, makes its share of the writes and prints how long they took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import nats
import nats.aio.client
from nats.js.api import KeyValueConfig, StorageType, StreamConfig

from services.bus.running import new_event_loop

PREFIX = "BENCHCW"
REGISTRY_AT_ONCE = 64
"""The registry's bootstraps at once (``services.registry.service.Settings.admission_concurrency``)."""
HEALTH_AT_ONCE = 32
"""Health's transition lanes (``services.health.service.Settings.transition_lanes``)."""


@dataclass
class Plan:
    url: str
    creds: str
    first: int
    count: int
    registry_at_once: int
    health_at_once: int


def _bucket(name: str) -> str:
    return f"{PREFIX}_{name}"


async def declare(nc: nats.aio.client.Client) -> None:
    js = nc.jetstream()
    for name in ("UIDS", "CLUSTERS", "PRESENCE"):
        await js.create_key_value(KeyValueConfig(bucket=_bucket(name), history=1, storage=StorageType.FILE))
    for name in ("EVENTS", "EVT"):
        await js.add_stream(
            StreamConfig(name=_bucket(name), subjects=[f"benchcw.{name.lower()}.>"], duplicate_window=120.0)
        )


async def remove(nc: nats.aio.client.Client) -> None:
    js = nc.jetstream()
    for name in ("UIDS", "CLUSTERS", "PRESENCE"):
        with contextlib.suppress(Exception):
            await js.delete_key_value(_bucket(name))
    for name in ("EVENTS", "EVT"):
        with contextlib.suppress(Exception):
            await js.delete_stream(_bucket(name))


WRITE_TIMEOUT = 120.0
"""Seconds each write may wait for its acknowledgement. A child's 2,500 inventories go out at once, as a fleet's
would; with nats-py's 5 s the last of them timed out behind the others on a slow hour (the baseline is the time
all take, not a latency)."""


async def writes(plan: Plan, nc: nats.aio.client.Client, go: asyncio.Event) -> float:
    js = nc.jetstream(timeout=WRITE_TIMEOUT)
    uids, clusters, presence = [await js.key_value(_bucket(n)) for n in ("UIDS", "CLUSTERS", "PRESENCE")]
    record, event, inventory = b"r" * 512, b"e" * 200, b"i" * 2048
    registry_turns = asyncio.Semaphore(plan.registry_at_once)
    health_turns = asyncio.Semaphore(plan.health_at_once)

    async def bootstrap(name: str) -> None:
        async with registry_turns:
            with contextlib.suppress(Exception):  # a record not there yet: the read costs the same
                await clusters.get(name)
            await uids.create(f"uid-{name}", name.encode())
            await clusters.put(name, record)
            await js.publish(f"benchcw.events.connected.{name}", event, headers={"Nats-Msg-Id": f"con-{name}"})

    async def transition(name: str) -> None:
        async with health_turns:
            await presence.put(name, record[:300])
            await js.publish(f"benchcw.events.online.{name}", event, headers={"Nats-Msg-Id": f"on-{name}"})

    async def inventory_of(name: str) -> None:
        await js.publish(f"benchcw.evt.{name}", inventory, headers={"Nats-Msg-Id": f"inv-{name}"})

    names = [f"c{i:06d}" for i in range(plan.first, plan.first + plan.count)]
    await go.wait()
    t0 = time.monotonic()
    await asyncio.gather(*(step(n) for n in names for step in (bootstrap, transition, inventory_of)))
    return time.monotonic() - t0


async def child(plan: Plan) -> None:
    nc = await nats.connect(plan.url, user_credentials=plan.creds, max_reconnect_attempts=3)
    go = asyncio.Event()
    loop = asyncio.get_running_loop()
    try:
        task = asyncio.create_task(writes(plan, nc, go), name="connect-writes")
        print("ready", flush=True)
        await loop.run_in_executor(None, sys.stdin.readline)
        go.set()
        took = await task
        print(json.dumps({"seconds": took, "agents": plan.count}), flush=True)
    finally:
        await nc.close()


async def run(url: str, creds: str, agents: int, processes: int, connect: Any) -> dict[str, Any]:
    """The writes of ``agents`` connects over ``processes`` children; seconds from "go" to the last done."""
    nc = await connect()
    await remove(nc)
    await declare(nc)
    procs: list[asyncio.subprocess.Process] = []
    try:
        share = -(-agents // processes)
        for p in range(processes):
            first = p * share
            count = max(0, min(share, agents - first))
            plan = Plan(
                url,
                creds,
                first,
                count,
                max(1, REGISTRY_AT_ONCE // processes),
                max(1, HEALTH_AT_ONCE // processes),
            )
            procs.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "tests.bench.connectwrites",
                    json.dumps(asdict(plan)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"connect-writes child: {line!r}")
        t0 = time.monotonic()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
        outs = [json.loads(await asyncio.wait_for(proc.stdout.readline(), 600)) for proc in procs if proc.stdout]
        took = time.monotonic() - t0
        return {"agents": agents, "writes_per_agent": 6, "seconds": took, "children": [o["seconds"] for o in outs]}
    finally:
        for proc in procs:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            await proc.wait()
        await remove(nc)
        await nc.close()


def main() -> None:
    plan = Plan(**json.loads(sys.argv[1]))
    loop = new_event_loop()
    try:
        loop.run_until_complete(child(plan))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
