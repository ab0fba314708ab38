"""Closing the agent's NATS link: drained by default, at once for a link with nothing in flight."""

from __future__ import annotations

from typing import Any

from agent.bus import Connection


class Client:
    """What ``Connection.close`` uses of nats-py's client; notes what was asked."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.is_closed = False
        self.is_connected = True

    async def drain(self) -> None:
        self.calls.append("drain")  # unsubscribe, PING, wait for the PONG: a round trip to the server
        self.is_closed = True

    async def close(self) -> None:
        self.calls.append("close")
        self.is_closed = True


def connection(client: Any) -> Connection:
    conn = Connection("test")
    conn._nc = client
    return conn


async def test_close_drains_by_default() -> None:
    client = Client()
    await connection(client).close()
    assert client.calls == ["drain"]


async def test_the_bootstrap_users_link_is_closed_without_a_drain() -> None:
    """Its one call is answered, nothing is in flight: no round trip to a server busy with a connect storm."""
    client = Client()
    conn = connection(client)
    await conn.close(drain=False)
    assert client.calls == ["close"]
    await conn.close(drain=False)  # safe twice
    assert client.calls == ["close"]
