"""A connect that nats-server answers with its PING before its PONG leaves a working link (issue 17).

nats-server sends its first PING 2 s after accepting a connection whose first PONG it has not yet sent. When it
takes longer than that over a CONNECT (in the 10,000-agent benchmark: read loops 2-3 s behind), its PING comes
before the PONG that nats-py waits for, and nats-py 2.16 returns from ``connect`` still *connecting*: nothing
published is ever sent, and the server drops the link as stale minutes later. One agent in 10,000 came online
six minutes late that way, and 40 in another run.

The rig makes a real nats-server slow over a CONNECT on purpose: its auth callout (the server asks a service of
ours whether to let the user in) answers only after ``CALLOUT_DELAY``, past the server's 2 s first PING. Both bus
runtimes' clients must come out of that connect up and carrying messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from agent.bus.client import PatchedClient
from services.bus import BusSettings, identity
from services.bus.connection import close, connect
from services.platform.natsd import NatsServer, NatsServerConfig, free_port

CALLOUT_DELAY = 2.6
"""Seconds the auth callout waits before it answers: past the server's first PING, 2 s after the accept."""

CALLOUT_USER = "callout"


def _claims(token: str) -> dict[str, object]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


class SlowCallout:
    """The server's auth callout: lets every user in, as a user of the server's global account, late."""

    def __init__(self, issuer_seed: str) -> None:
        self.seed = issuer_seed
        self.nc = Client()

    async def start(self, url: str) -> None:
        await self.nc.connect(url, user=CALLOUT_USER, password=CALLOUT_USER)
        await self.nc.subscribe("$SYS.REQ.USER.AUTH", cb=self._authorize)
        await self.nc.flush()

    async def _authorize(self, msg: Msg) -> None:
        request = _claims(msg.data.decode())["nats"]
        assert isinstance(request, dict)
        await asyncio.sleep(CALLOUT_DELAY)
        user = identity.encode_jwt(
            {
                "sub": request["user_nkey"],
                "aud": "$G",
                "name": "late",
                "nats": {"pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1, "type": "user", "version": 2},
            },
            self.seed,
        )
        answer = identity.encode_jwt(
            {
                "sub": request["user_nkey"],
                "aud": request["server_id"]["id"],
                "nats": {"jwt": user, "type": "authorization_response", "version": 2},
            },
            self.seed,
        )
        await msg.respond(answer.encode())


@pytest.fixture
def slow_server(tmp_path: Path) -> Iterator[tuple[NatsServer, str]]:
    seed = identity.new_seed("account")
    auth = (
        "authorization {\n  timeout: 10\n"
        f"  users: [ {{ user: {CALLOUT_USER}, password: {CALLOUT_USER} }} ]\n"
        f"  auth_callout {{ issuer: {identity.public_key(seed)}, auth_users: [ {CALLOUT_USER} ] }}\n}}"
    )
    config = NatsServerConfig(store_dir=tmp_path / "js", port=free_port(), server_name="slow", extra=auth)
    server = NatsServer(config, conf_path=tmp_path / "nats.conf", log_path=tmp_path / "nats.log")
    server.start()
    try:
        yield server, seed
    finally:
        server.stop()


@pytest.fixture
async def callout(slow_server: tuple[NatsServer, str]) -> AsyncIterator[SlowCallout]:
    server, seed = slow_server
    await server.wait_ready()
    service = SlowCallout(seed)
    await service.start(server.url)
    try:
        yield service
    finally:
        await service.nc.close()


async def _first_line_after_connect(url: str) -> bytes:
    """What the server sends first after a CONNECT and a PING, read off a bare socket."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await reader.readline()  # INFO
        writer.write(b'CONNECT {"verbose":false,"user":"a","pass":"b"}\r\nPING\r\n')
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _carries(nc: Client, watcher: Client) -> None:
    """``nc`` publishes and the message arrives; ``nc`` answers a round trip."""
    sub = await watcher.subscribe("probe")
    await watcher.flush()
    await nc.publish("probe", b"through")
    got = await sub.next_msg(timeout=5)
    assert got.data == b"through"
    await nc.flush(timeout=5)


async def test_the_rig_sends_the_servers_ping_before_its_pong(
    slow_server: tuple[NatsServer, str], callout: SlowCallout
) -> None:
    first = await _first_line_after_connect(slow_server[0].url)
    assert first == b"PING\r\n", f"the server answered {first!r} first: the rig no longer reproduces the race"


async def test_an_agents_client_is_up_after_the_servers_ping_came_first(
    slow_server: tuple[NatsServer, str], callout: SlowCallout
) -> None:
    nc = PatchedClient()
    await nc.connect(slow_server[0].url, user="agent", password="x", connect_timeout=8, max_reconnect_attempts=1)
    try:
        assert nc.is_connected, f"nats-py left the client in status {nc._status}"
        await _carries(nc, callout.nc)
    finally:
        await nc.close()


async def test_a_services_client_is_up_after_the_servers_ping_came_first(
    slow_server: tuple[NatsServer, str], callout: SlowCallout
) -> None:
    settings = BusSettings(url=slow_server[0].url, user="service", password="x", connect_timeout=8)
    nc = await connect(settings, "handshake-test")
    try:
        assert nc.is_connected, f"nats-py left the client in status {nc._status}"
        await _carries(nc, callout.nc)
    finally:
        await close(nc)
