"""A reconnect attempt that fails after its handshake leaves nothing of itself running (issue 17).

In a restart of 10,000 agents, nats-py 2.16 logged "nats: flush timeout" and then, on the same connections,
"read() called while another coroutine is already waiting for incoming data" (63 times in one run). nats-py's
reconnect cancels the old read loop, pinger and flusher and closes the socket once, before its loop of attempts;
an attempt whose handshake succeeded but whose flush (after re-sending the subscriptions) timed out left its
read loop, pinger and flusher running and its socket open, and the next attempt reused the same transport
object with a new socket under it: two read loops on one connection.

The peer here is scripted, not nats-server, because the fault needs one exact answer: the second connection's
handshake is answered (PONG), the flush after it is not. A real server does that only when it is overloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from nats.aio.client import Client

from agent.bus.client import PatchedClient
from services.bus.client import LinkClient
from tests.harness import wait_for


@dataclass
class Peer:
    """One accepted connection: the lines it sent, and whether the client closed it."""

    index: int
    writer: asyncio.StreamWriter
    lines: list[bytes] = field(default_factory=list)
    closed_by_client: asyncio.Event = field(default_factory=asyncio.Event)


class ScriptedServer:
    """Speaks just enough NATS: every connection is answered, except the flush on the second one."""

    def __init__(self, late_flush: float | None = None) -> None:
        self.late_flush = late_flush
        """Seconds after which the second connection answers the flush after its handshake (None: never)."""
        self.peers: list[Peer] = []
        self.accepted = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for peer in self.peers:
            peer.writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(len(self.peers), writer)
        self.peers.append(peer)
        self.accepted.set()
        info = {"server_id": "scripted", "version": "2.10.0", "proto": 1, "headers": True, "max_payload": 1 << 20}
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\n")
        pings = 0
        with contextlib.suppress(ConnectionError):
            while line := await reader.readline():
                peer.lines.append(line)
                if line.startswith(b"PING"):
                    pings += 1
                    # The second connection answers its handshake's PING; the flush after it late or never.
                    if peer.index != 1 or pings != 2:
                        writer.write(b"PONG\r\n")
                    elif self.late_flush is not None:
                        asyncio.get_running_loop().call_later(self.late_flush, writer.write, b"PONG\r\n")
        peer.closed_by_client.set()


async def connect_and_lose_the_first_link(nc: Client, server: ScriptedServer, **callbacks: Any) -> None:
    """Connect ``nc`` to ``server`` (every reconnect attempt 0.1 s after the last), subscribe, and close the first
    connection from the server's side: the client reconnects."""

    def pick(servers: list[Any], _info: dict[str, Any]) -> tuple[Any, float]:
        return servers[0], 0.1

    await nc.connect(
        f"nats://127.0.0.1:{server.port}",
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_to_server_handler=pick,
        connect_timeout=2,
        ping_interval=120,
        **callbacks,
    )
    await nc.subscribe("tether.test")
    await nc.flush()
    server.peers[0].writer.close()


@pytest.mark.parametrize("client_class", [PatchedClient, LinkClient], ids=["agent", "services"])
async def test_a_failed_reconnect_attempt_is_closed_before_the_next_one(client_class: type[Client]) -> None:
    server = ScriptedServer()
    await server.start()
    errors: list[Exception] = []
    nc = client_class()

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    try:
        await connect_and_lose_the_first_link(nc, server, error_cb=on_error)

        # The second connection's flush times out (10 s, the agent's 30 s); the third one is the link.
        await wait_for(lambda: len(server.peers) >= 3, what="a third connection", timeout=40)
        second = server.peers[1]
        assert any(line.startswith(b"SUB tether.test") for line in second.lines), "the rig reached the flush"
        await wait_for(second.closed_by_client.is_set, what="the failed attempt's socket closed by us", timeout=5)

        await wait_for(lambda: nc.is_connected, what="connected on the third connection")
        await nc.publish("tether.test", b"after")
        await nc.flush(timeout=5)
        assert any(line.startswith(b"PUB tether.test") for line in server.peers[2].lines)
        assert not [e for e in errors if isinstance(e, RuntimeError)], errors
        assert len(server.peers) == 3, "no further reconnect: the link it made is the one it uses"
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await server.stop()


async def test_the_agent_waits_for_a_late_reconnect_flush_instead_of_dialling_again() -> None:
    """A server more than 10 s behind (a fleet reconnecting) still answers: the agent's reconnect keeps the link it
    made (``RECONNECT_FLUSH_TIMEOUT``) instead of giving it up at nats-py's 10 s and adding a connection."""
    server = ScriptedServer(late_flush=12.0)
    await server.start()
    nc = PatchedClient()
    reconnected = asyncio.Event()

    async def on_reconnected() -> None:
        reconnected.set()

    try:
        await connect_and_lose_the_first_link(nc, server, reconnected_cb=on_reconnected)
        await wait_for(lambda: len(server.peers) >= 2, what="the reconnect's connection", timeout=10)
        await wait_for(reconnected.is_set, what="the reconnect done, on the late PONG", timeout=25)
        assert nc.stats["reconnects"] == 1
        await nc.publish("tether.test", b"after")
        await nc.flush(timeout=5)
        assert any(line.startswith(b"PUB tether.test") for line in server.peers[1].lines)
        assert len(server.peers) == 2, "the late link was kept: no connection dialled after it"
    finally:
        with contextlib.suppress(Exception):
            await nc.close()
        await server.stop()
