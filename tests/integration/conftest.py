"""Fixtures shared by the integration tests that run lifecycle in the test's own process."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.bus import Bus
from services.bus.nats_bus import NatsBus
from services.bus.settings import BusSettings
from tests.harness import NatsServer


@pytest.fixture
async def lifecycle_bus(nats_server: NatsServer) -> AsyncIterator[Bus]:
    """A platform bus on ``nats_server`` (no auth), as lifecycle's own; closed afterwards."""
    await nats_server.wait_ready()
    connected = await NatsBus.connect(BusSettings(url=nats_server.url), "test-lifecycle")
    yield connected
    await connected.close()
