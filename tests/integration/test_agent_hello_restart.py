"""A hello sent while the registry restarts is answered soon after it is back (issue 17, restart at 10,000).

After a restart of the platform every agent reconnects before the registry has subscribed again, so its hello
is told at once by nats-server that nobody listens. The agent used to take that like a timeout and double its
backoff up to 30 s: at 100 agents the hellos were answered p50 3.1 s after NATS started, 2 ms of it in the
registry. Now it asks again within two seconds (jittered) for as long as nobody listens. Real nats-server,
real registry (in this process), real agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import nats
from nats.aio.msg import Msg

from agent.running import Agent
from agent.settings import AgentSettings
from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from schemas.errors import TetherError
from schemas.messages import AgentWelcome, ClusterConnectInfo, ClusterCreate, decode
from services.bus.endpoints import call
from services.platform.natsd import NatsServer
from tests.harness import registry_in_process, wait_for

CLUSTER = "c1"
OUTAGE = 16.0
"""Seconds the registry stays away while the agent asks: a doubling backoff from 0.5 s sleeps 8-16 s by then
(the old agent's hello was answered within ANSWERED_WITHIN of the registry's return about one time in five)."""
ANSWERED_WITHIN = 3.5
"""Seconds after the registry answers again by which the waiting hello must be answered: the retry cap (2 s)
and the handling, with room for a loaded machine."""


async def test_a_hello_nobody_listened_to_is_answered_soon_after_the_registry_is_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    welcomes: list[float] = []
    loop = asyncio.get_running_loop()

    async def welcomed(msg: Msg) -> None:
        # The agent's inbox, not the hello subject: listening there would be interest, and a hello sent while
        # the registry is away would wait for an answer instead of being told at once that nobody listens.
        with contextlib.suppress(TetherError):
            decode(msg.data, AgentWelcome)
            welcomes.append(loop.time())

    await nc.subscribe(f"{agent_inbox_prefix(CLUSTER)}.>", cb=welcomed)
    try:
        async with contextlib.AsyncExitStack() as stack:
            registry = await stack.enter_async_context(contextlib.AsyncExitStack())
            await registry.enter_async_context(registry_in_process(nats_server.url))
            info = await call(nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=CLUSTER), ClusterConnectInfo)
            settings = AgentSettings(
                server=nats_server.url, token=info.token, state_dir=tmp_path / "agent", heartbeat_interval=0.5
            )
            # Up: its bootstrap's answer was its first welcome (the consumer made when the cluster was registered).
            agent = await stack.enter_async_context(Agent(settings))

            # The registry goes away; the agent reconnects and says hello to nobody, again and again.
            await registry.aclose()
            await agent.connection.force_reconnect()
            await wait_for(lambda: not agent.session.reconnected.is_set(), what="the hello under way", timeout=30)
            before = len(welcomes)
            await asyncio.sleep(OUTAGE)
            assert len(welcomes) == before, "a hello was answered while the registry was away"

            async with registry_in_process(nats_server.url):
                back = loop.time()
                await wait_for(lambda: len(welcomes) > before, what="the hello answered", timeout=60)
                took = welcomes[before] - back
                assert took <= ANSWERED_WITHIN, f"the hello was answered {took:.1f}s after the registry was back"
                assert agent.connection.is_connected
    finally:
        await nc.close()
