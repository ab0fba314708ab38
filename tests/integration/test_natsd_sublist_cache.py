"""The platform's nats-server keeps no cache of subject matches (``NatsServerConfig.sublist_cache``; real
nats-server): every agent's (re)connect adds three wildcard subscriptions, each matched against every cached
subject while the cache is kept, which took 12 % of nats-server's CPU in a restart of 10,000 agents."""

from __future__ import annotations

from pathlib import Path

import httpx
import nats
from nats.aio.msg import Msg

from services.platform.natsd import NatsServer, NatsServerConfig, free_port
from tests.harness import wait_for


async def cached_subjects(sublist_cache: bool, tmp_path: Path) -> int:
    """How many subjects the server has cached after a wildcard subscription got twenty messages."""
    config = NatsServerConfig(store_dir=tmp_path / "js", port=free_port(), sublist_cache=sublist_cache)
    server = NatsServer(config, conf_path=tmp_path / "nats.conf", log_path=tmp_path / "nats.log")
    server.start()
    try:
        await server.wait_ready()
        nc = await nats.connect(server.url)
        received: list[str] = []

        async def got(msg: Msg) -> None:
            received.append(msg.subject)

        try:
            await nc.subscribe("cluster.*", cb=got)
            for i in range(20):
                await nc.publish(f"cluster.c{i}", b"hb")
            # Delivered back: the server has matched every publish (nats-py's flush alone does not say so).
            await wait_for(lambda: len(received) == 20, timeout=10, what="the twenty messages delivered")
            # Read while subscribed: a subscription's removal takes its subjects out of the cache.
            async with httpx.AsyncClient(timeout=5) as http:
                stats = (await http.get(f"http://127.0.0.1:{config.monitor_port}/subsz")).json()
        finally:
            await nc.close()
        return int(stats["num_cache"])
    finally:
        server.stop()


async def test_the_platforms_server_caches_no_subject(tmp_path: Path) -> None:
    assert await cached_subjects(NatsServerConfig.sublist_cache, tmp_path / "default") == 0


async def test_with_the_cache_asked_for_the_same_traffic_fills_it(tmp_path: Path) -> None:
    # What the default is measured against: nats-server's own default keeps one entry per subject published.
    assert await cached_subjects(True, tmp_path / "cached") >= 20
