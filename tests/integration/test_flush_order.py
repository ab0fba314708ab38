"""A flush is a barrier: its PONG comes back only after the server read everything sent before it.

A service says it is ready once its subscriptions are flushed; another connection may then ask it at once.
nats-py 2.16 writes a flush's PING straight to the socket while a SUB sent just before still waits in the
client's buffer for the flusher task, so the server can answer the PING before it reads the SUB. CI caught a
service "ready" and not yet subscribed that way once. Both bus runtimes' clients queue the PING behind the
buffer; what each writes to the socket is recorded here, in order, over a real nats-server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nats.aio.client import Client

from agent.bus.client import PatchedClient
from services.bus.client import LinkClient
from services.platform.natsd import NatsServer
from tests.harness import monitor, start_nats

SUBJECT = "tether.flush.order"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    nats = start_nats(tmp_path)
    try:
        yield nats
    finally:
        nats.stop()


class Recorder:
    """Everything a client writes to its socket, in the order written."""

    def __init__(self, nc: Client) -> None:
        self.sent = bytearray()
        transport: Any = nc._transport
        write, writelines = transport.write, transport.writelines

        def recorded_write(data: bytes) -> None:
            self.sent += data
            write(data)

        def recorded_writelines(lines: list[bytes]) -> None:
            for line in lines:
                self.sent += line
            writelines(lines)

        transport.write, transport.writelines = recorded_write, recorded_writelines


async def _subscribe_then_flush(nc: Client) -> bytes:
    """What reached the socket from a SUB and the flush after it, with nothing yielding in between."""
    recorder = Recorder(nc)
    await nc.subscribe(SUBJECT)
    await nc.flush(timeout=5)
    return bytes(recorder.sent)


async def test_the_rig_catches_nats_pys_own_ping_overtaking_a_sub(server: NatsServer) -> None:
    await server.wait_ready()
    nc = Client()
    await nc.connect(server.url, allow_reconnect=False)
    try:
        sent = await _subscribe_then_flush(nc)
    finally:
        await nc.close()
    assert sent.index(b"PING") < sent.index(f"SUB {SUBJECT}".encode()), (
        f"nats-py sent {sent!r}: its flush no longer overtakes the buffer, and the rig no longer reproduces it"
    )


@pytest.mark.parametrize("client", [LinkClient, PatchedClient], ids=["platform", "agent"])
async def test_a_flush_follows_what_was_sent_before_it(server: NatsServer, client: type[Client]) -> None:
    await server.wait_ready()
    nc = client()
    await nc.connect(server.url, allow_reconnect=False)
    try:
        sent = await _subscribe_then_flush(nc)
        # Looked at without an await in between: the PONG alone says the server has the subscription.
        listed = monitor(server, f"/subsz?subs=1&test={SUBJECT}") or {}
        await nc.flush(timeout=5)  # the pinger's and a flush's PONGs still pair with their PINGs
    finally:
        await nc.close()
    assert sent.index(f"SUB {SUBJECT}".encode()) < sent.index(b"PING"), f"sent {sent!r}"
    assert [sub.get("subject") for sub in listed.get("subscriptions_list", [])] == [SUBJECT]
