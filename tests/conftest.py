from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client

from services.platform.natsd import NatsServer
from tests import hangs
from tests.harness import Stack, running, start_nats
from tests.upstack import Up, stop_up


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    server = start_nats(tmp_path)
    yield server
    server.stop()


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A plain connection to ``nats_server`` (no auth), drained afterwards."""
    await nats_server.wait_ready()
    conn = await nats.connect(nats_server.url)
    yield conn
    await conn.drain()


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with running(Stack(tmp=tmp_path), request) as s:
        yield s


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    """``tether up`` on a fresh data dir and free ports (started by the test); stopped, nothing left behind."""
    u = Up(tmp_path)
    yield u
    stop_up(u)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    rep = outcome.get_result()
    setattr(item, f"rep_{rep.when}", rep)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item):  # type: ignore[no-untyped-def]
    """A test that hangs shows its asyncio tasks' stacks before pytest-timeout ends it (``tests/hangs.py``)."""
    yield from hangs.watch(hangs.timeout_of(item))
