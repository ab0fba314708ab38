"""One contract, two buses: every test in ``tests/bus`` runs against ``MemoryBus`` and against ``NatsBus`` on a
real nats-server (the in-memory bus is only worth having if it keeps the same rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from services.bus import Bus, BusSettings
from services.bus.memory import MemoryBus
from services.bus.nats_bus import NatsBus
from services.platform.natsd import NatsServer
from tests.harness import start_nats


@pytest.fixture(params=["memory", "nats"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def server(kind: str, tmp_path: Path) -> Iterator[NatsServer | None]:
    if kind == "memory":
        yield None
        return
    nats = start_nats(tmp_path)
    try:
        yield nats
    finally:
        nats.stop()


@pytest.fixture
async def bus(server: NatsServer | None) -> AsyncIterator[Bus]:
    if server is None:
        memory = MemoryBus(max_payload=8 * 1024 * 1024)  # the embedded server's (natsd.py)
        await memory.declare_streams("platform", "commands")
        yield memory
        return
    await server.wait_ready()
    real = await NatsBus.connect(BusSettings(url=server.url), "contract")
    try:
        await real.declare_streams("platform", "commands")
        yield real
    finally:
        await real.close()
