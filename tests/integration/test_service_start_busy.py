"""A service's connect waits as long as ``BusSettings.connect_timeout`` says for a server's greeting (a server
busy with a reconnect storm greets late), and the first connect tries again until one attempt gets through."""

from __future__ import annotations

import asyncio

from services.bus import BusSettings, close, connect
from services.platform.natsd import NatsServer
from tests.chaos.proxy import Proxy

GREETING_AFTER = 3.0
"""Seconds the server's greeting takes: longer than the default 2 s an attempt."""


async def test_a_service_connects_to_a_server_that_greets_late_when_told_to_wait(nats_server: NatsServer) -> None:
    await nats_server.wait_ready()
    proxy = await Proxy("127.0.0.1", nats_server.config.port).start()
    proxy.greet_delay = GREETING_AFTER
    try:
        async with asyncio.timeout(4 * GREETING_AFTER):
            nc = await connect(BusSettings(url=proxy.url, connect_timeout=5), "late-greeting")
        try:
            assert nc.is_connected
            await nc.flush(timeout=5)
        finally:
            await close(nc)
    finally:
        await proxy.close()


async def test_the_first_connect_tries_again_until_the_server_greets_in_time(nats_server: NatsServer) -> None:
    await nats_server.wait_ready()
    proxy = await Proxy("127.0.0.1", nats_server.config.port).start()
    proxy.greet_delay = GREETING_AFTER
    connecting = asyncio.create_task(connect(BusSettings(url=proxy.url), "late-greeting"))
    try:
        await asyncio.sleep(2 * GREETING_AFTER)  # attempts given up meanwhile: the connect is still trying
        assert not connecting.done()
        proxy.greet_delay = 0.0  # the storm has passed
        async with asyncio.timeout(10):
            nc = await connecting
        try:
            assert nc.is_connected
        finally:
            await close(nc)
    finally:
        connecting.cancel()
        await proxy.close()
