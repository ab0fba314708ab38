"""The services' and the agent's nats-py clients answer requests through their own lean path (a counter for the
reply token, a timer for the timeout), on a real nats-server: what nats-py's request promised still holds
(the answer, no responders, a timeout, a late answer dropped, nothing left behind), and no request reads
``os.urandom`` any more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from agent.bus.client import PatchedClient
from services.bus.limits import GuardedClient
from services.platform.natsd import NatsServer


@pytest.fixture(params=[GuardedClient, PatchedClient], ids=["services", "agent"])
async def client(request: pytest.FixtureRequest, nats_server: NatsServer) -> AsyncIterator[Client]:
    await nats_server.wait_ready()
    nc: Client = request.param()
    await nc.connect(nats_server.url)
    yield nc
    await nc.close()


async def test_a_request_is_answered_and_fails_as_nats_py_said(
    client: Client, nc: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow: list[Msg] = []

    async def echo(msg: Msg) -> None:
        await msg.respond(b"re: " + msg.data)

    async def late(msg: Msg) -> None:
        slow.append(msg)

    await nc.subscribe("echo", cb=echo)
    await nc.subscribe("late", cb=late)
    await nc.flush()

    def no_random(n: int) -> bytes:
        raise AssertionError("a request read os.urandom")

    monkeypatch.setattr("nats.aio.client.token_hex", no_random)
    answers = await asyncio.gather(*(client.request("echo", b"%d" % i, timeout=5) for i in range(50)))
    assert [a.data for a in answers] == [b"re: %d" % i for i in range(50)]
    with pytest.raises(NoRespondersError):
        await client.request("nobody.listens", b"?", timeout=5)
    with pytest.raises(NatsTimeout):
        await client.request("late", b"1", timeout=0.2)
    await slow[0].respond(b"too late")  # for a request that gave up: taken for nobody's
    assert (await client.request("echo", b"2", timeout=5)).data == b"re: 2"
    assert client._resp_map == {}, "a finished request left its reply waiting"


async def test_a_cancelled_request_leaves_nothing_behind(client: Client, nc: Client) -> None:
    async def never(msg: Msg) -> None:
        return None

    await nc.subscribe("late", cb=never)
    await nc.flush()
    asking = asyncio.ensure_future(client.request("late", b"1", timeout=5))
    await asyncio.sleep(0.1)
    asking.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asking
    assert client._resp_map == {}
