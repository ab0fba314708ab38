"""A service started while the server is busy (a reconnect storm of 10,000 agents) comes up once the server
answers, instead of giving up each handshake and joining the back of the queue again."""

from __future__ import annotations

import asyncio

from services.bus import BusSettings, close, connect
from services.platform.natsd import NatsServer
from tests.chaos.proxy import Proxy

GREETING_AFTER = 3.0
"""Seconds the server's greeting takes: longer than the 2 s an attempt the services had."""


async def test_a_service_connects_to_a_server_that_greets_late(nats_server: NatsServer) -> None:
    await nats_server.wait_ready()
    proxy = await Proxy("127.0.0.1", nats_server.config.port).start()
    proxy.greet_delay = GREETING_AFTER
    try:
        async with asyncio.timeout(4 * GREETING_AFTER):
            nc = await connect(BusSettings(url=proxy.url), "late-greeting")
        try:
            assert nc.is_connected
            await nc.flush(timeout=5)
        finally:
            await close(nc)
    finally:
        await proxy.close()
