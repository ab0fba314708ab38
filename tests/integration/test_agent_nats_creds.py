"""The agent presents its NATS user from its ``.creds`` file at every connect, read whole (issue 17).

nats-py's own reader (``user_credentials=<path>``) looks for the seed reading the unbuffered file line by line:
one system call per byte, about 1,100 per connect, 0.55 ms of CPU (8.6 % of the benchmark's agent workers while
1,000 agents connected). The agent reads the file in one go now, still at every connect, so a renewed JWT is
what the next reconnect presents. Real nats-server in operator mode.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.bus import Connection, NatsIdentity, connect
from agent.errors import PermanentError
from agent.settings import AgentSettings
from schemas.credentials import new_user_seed
from services.bus.identity import Trust
from services.platform.natsd import NatsServer
from tests.harness import monitor, start_nats, wait_for

PROC_IO = Path("/proc/self/io")


def read_syscalls() -> int:
    """Read system calls this process made so far (Linux ``/proc/self/io``: ``syscr``)."""
    for line in PROC_IO.read_text().splitlines():
        if line.startswith("syscr:"):
            return int(line.split()[1])
    raise AssertionError("no syscr in /proc/self/io")


@dataclass
class Broker:
    server: NatsServer
    trust: Trust
    creds: Path
    seed: str

    def write_user(self, name: str) -> None:
        """(Re)write the agent's creds file: a JWT named and tagged ``name`` for the same key."""
        self.creds.write_text(self.trust.user_creds(name, seed=self.seed, tags=[f"v:{name}"]))

    def presented(self, client: str) -> list[str]:
        """The JWT tags the server holds for the connections called ``client``."""
        connz = monitor(self.server, "/connz?auth=true&limit=1000") or {}
        conns = [c for c in connz.get("connections", []) if c.get("name") == client]
        return [tag for c in conns for tag in c.get("tags", [])]


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    server = start_nats(tmp_path, auth=tmp_path / "auth")
    try:
        await server.wait_ready()
        b = Broker(server, Trust.load(tmp_path / "auth"), tmp_path / "state" / "nats.creds", new_user_seed())
        b.creds.parent.mkdir()
        b.write_user("agent-first")
        yield b
    finally:
        server.stop()


def identity(path: Path) -> NatsIdentity:
    return NatsIdentity(creds=str(path), inbox_prefix="_INBOX_c1", refused="refused")


async def dial(broker: Broker, name: str) -> Connection:
    settings = AgentSettings(server=broker.server.url, state_dir=broker.creds.parent)
    return await connect(settings, name, identity=identity(broker.creds))


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts read system calls in /proc/self/io (Linux)")
async def test_a_connect_reads_the_creds_file_whole_not_a_byte_per_system_call(broker: Broker) -> None:
    size = broker.creds.stat().st_size
    before = read_syscalls()
    conn = await dial(broker, "agent-reads")
    try:
        reads = read_syscalls() - before
        # The file twice (JWT, then seed: a few reads each) and the server's INFO and PONG; nats-py's own
        # reader made one per byte up to the seed.
        assert reads < 100, f"{reads} read system calls for one connect with a {size}-byte creds file"
        assert broker.presented("agent-reads") == ["v:agent-first"]
    finally:
        await conn.close()


async def test_a_reconnect_presents_the_renewed_jwt_from_the_file(broker: Broker) -> None:
    conn = await dial(broker, "agent-renews")
    try:
        broker.write_user("agent-renewed")  # what a renewal does, then it forces a reconnect
        await conn.force_reconnect()
        await wait_for(
            lambda: conn.is_connected and broker.presented("agent-renews") == ["v:agent-renewed"],
            what="the reconnect presenting the renewed JWT",
            timeout=15,
        )
    finally:
        await conn.close()


async def test_a_damaged_creds_file_is_a_permanent_error_naming_it(broker: Broker) -> None:
    broker.creds.write_text("not creds at all\n")
    with pytest.raises(PermanentError, match=r"malformed NATS credentials in .*nats\.creds"):
        await dial(broker, "agent-damaged")
