"""A service's endpoints are served through a server that stands still for longer than a flush waits: the
flushes that prove its subscriptions were read are tried again while the server is busy (``patience``), and the
start does not end.

In a one-core restart of 10,000 agents such a flush took longer than its 10 s, and the registry and health,
their endpoints subscribed and their state loaded, ended (tests/bench/RESULTS.md, thirty-seventh stop). Here a
flush waits 1 s and the server stands still for 3."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from schemas.messages import Empty
from services.bus.interface import Endpoints
from services.bus.nats_bus import NatsBus
from services.bus.settings import BusSettings
from tests.harness import start_nats

FREEZE = 3.0
"""Seconds the server stands still: three flushes' worth."""


async def test_endpoints_are_served_once_a_server_that_stood_still_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flush = Client.flush
    timeouts: list[float] = []

    async def short_flush(self: Client, timeout: int = 10) -> None:
        timeouts.append(min(timeout, 1))
        await flush(self, min(timeout, 1))

    monkeypatch.setattr(Client, "flush", short_flush)
    server = start_nats(tmp_path)
    bus: NatsBus | None = None
    try:
        await server.wait_ready()
        assert server.proc is not None
        bus = await NatsBus.connect(BusSettings(url=server.url), "svc")

        async def hello(_req: Empty) -> Empty:
            return Empty()

        served = Endpoints()
        served.platform("tether.svc.test.hello", Empty, hello)
        timeouts.clear()
        os.kill(server.proc.pid, signal.SIGSTOP)
        serving: asyncio.Task[Any]
        try:
            serving = asyncio.create_task(bus.serve("svc", "1.0.0", served))
            await asyncio.sleep(FREEZE)  # the stall itself: what is looked at is what the start did in it
            assert not serving.done(), f"the start ended in the stall: {serving.exception()!r}"
            assert len(timeouts) >= 2, "no flush was tried again: the stall did not reach the start"
        finally:
            os.kill(server.proc.pid, signal.SIGCONT)
        host = await asyncio.wait_for(serving, 30)
        try:
            assert await bus.call("tether.svc.test.hello", Empty(), Empty, timeout=5) == Empty()
        finally:
            await host.stop()
    finally:
        if bus is not None:
            await bus.close()
        server.stop()
