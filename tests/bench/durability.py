"""What durable writes cost: raw nats-py JetStream publish rates with ``sync_interval: always`` and without.

    python -m tests.bench.durability [--seconds 5] [--size 512] [--json out.json]

Starts one nats-server per setting (the platform's embedded config, file storage, one replica) on a temporary
directory of this machine's disk, and measures, for each: publishes acknowledged per second with one in
flight (a caller that waits for each ack, as the platform's writes do) and with 64 in flight (pipelined).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import nats
from nats.js.api import RetentionPolicy, StorageType, StreamConfig

from services.platform.natsd import NatsServer, NatsServerConfig, free_port


async def publish_rate(url: str, *, in_flight: int, seconds: float, size: int) -> float:
    """Acknowledged JetStream publishes per second, ``in_flight`` at a time, over ``seconds``."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    stream = f"BENCH{in_flight}"
    await js.add_stream(
        StreamConfig(
            name=stream, subjects=[f"bench.{in_flight}.>"], storage=StorageType.FILE, retention=RetentionPolicy.LIMITS
        )
    )
    payload = b"x" * size
    done = 0
    stop = time.monotonic() + seconds

    async def loop(n: int) -> None:
        nonlocal done
        i = 0
        while time.monotonic() < stop:
            await js.publish(f"bench.{in_flight}.{n}.{i % 100}", payload, timeout=10)
            done += 1
            i += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*(loop(n) for n in range(in_flight)))
    finally:
        await nc.close()
    return done / (time.monotonic() - started)


async def measure(seconds: float, size: int) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(dir=Path.home()) as tmp:
        for label, sync in (("sync_interval: always", True), ("default (2 min)", False)):
            base = Path(tmp) / ("sync" if sync else "default")
            config = NatsServerConfig(store_dir=base / "js", port=free_port(), sync_always=sync)
            server = NatsServer(config, conf_path=base / "nats.conf", log_path=base / "nats.log")
            server.start()
            try:
                await server.wait_ready()
                out[label] = {
                    "one_in_flight_per_s": await publish_rate(server.url, in_flight=1, seconds=seconds, size=size),
                    "64_in_flight_per_s": await publish_rate(server.url, in_flight=64, seconds=seconds, size=size),
                }
            finally:
                server.stop()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.durability", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    result: dict[str, Any] = asyncio.run(measure(args.seconds, args.size))
    for label, figures in result.items():
        print(
            f"{label:24} one in flight {figures['one_in_flight_per_s']:8.0f}/s   "
            f"64 in flight {figures['64_in_flight_per_s']:8.0f}/s"
        )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
