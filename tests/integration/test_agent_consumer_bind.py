"""The agent binds to the durable consumer its hello's answer named, without asking JetStream (issue 17).

At 10,000 agents connecting, the agent's own look-up of its consumer right after the hello (whose handler
had just made sure of it) was the longest wait of a connect (p50 4 s on JetStream's API queue). The welcome
names the consumer now and the agent binds without a ``CONSUMER.INFO``; after a reconnect nothing is looked
up either. A consumer gone meanwhile (its state is in nats-server's memory: a lone server's restart loses it)
is found by the next fetch (JetStream answers 503 at once), the platform asked (a hello) to make it again,
and the agent binds to the one the answer names. Real nats-server, real registry, real agent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig
from nats.js.errors import NotFoundError

from agent.bus import CommandQueue, connect
from agent.running import Agent
from agent.settings import AgentSettings
from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from schemas.errors import TetherError
from schemas.messages import AgentWelcome, ClusterConnectInfo, ClusterCreate, decode
from services.bus.endpoints import call
from services.bus.nats_bus import NatsBus
from services.bus.settings import BusSettings
from services.bus.streams import agent_consumer_config, ensure_agent_consumer
from services.platform.natsd import NatsServer
from services.registry.sweep import sweep_consumers
from tests.harness import registry_in_process, wait_for

CLUSTER = "c1"
OWN_INBOX = "_INBOX_test"
"""The test's own requests (its look-ups of the consumer) come back here: not counted."""


@dataclass
class LookUps:
    """``CONSUMER.INFO`` requests for the cluster's consumer (``seen``: from the agent's own inbox; ``by_all``:
    from anyone but the test, the registry included), and the answers to the agent's hellos (``welcomes``)."""

    seen: list[str] = field(default_factory=list)
    by_all: list[str] = field(default_factory=list)
    welcomes: int = 0

    async def note(self, msg: Msg) -> None:
        if msg.subject.endswith("." + subjects.agent_consumer(CLUSTER)) and not msg.reply.startswith(OWN_INBOX):
            self.by_all.append(msg.subject)
            if msg.reply.startswith(agent_inbox_prefix(CLUSTER)):
                self.seen.append(msg.subject)

    async def reply(self, msg: Msg) -> None:
        # Not by listening to the hellos themselves: a listener is interest, so a hello sent before the
        # registry is back would wait for its answer instead of being told at once that nobody answers.
        with contextlib.suppress(TetherError):
            decode(msg.data, AgentWelcome)
            self.welcomes += 1


@dataclass
class Platform:
    url: str
    nc: Client
    """The test's JetStream requests (replies to ``OWN_INBOX``)."""
    services: Client
    """The test's requests to the registry (which answers only into the usual inboxes)."""
    looked_up: LookUps

    async def consumer_exists(self, stream: str) -> bool:
        try:
            await self.nc.jetstream().consumer_info(stream, subjects.agent_consumer(CLUSTER), timeout=5)
        except NotFoundError:
            return False
        return True

    async def probe(self, stream: str) -> int:
        """Publish a message the agent's consumer takes (on a subject of its filter); its stream sequence."""
        info = await self.nc.jetstream().consumer_info(stream, subjects.agent_consumer(CLUSTER), timeout=5)
        subject = (info.config.filter_subject or "").replace(">", "probe").replace("*", "probe")
        ack = await self.nc.jetstream().publish(subject, b"not a command")
        return int(ack.seq)

    async def delivered(self, stream: str, seq: int) -> bool:
        info = await self.nc.jetstream().consumer_info(stream, subjects.agent_consumer(CLUSTER), timeout=5)
        return info.delivered.stream_seq >= seq and info.num_ack_pending == 0


@pytest.fixture
async def platform(nats_server: NatsServer) -> AsyncIterator[Platform]:
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    own = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.2, inbox_prefix=OWN_INBOX
    )
    looked_up = LookUps()
    await nc.subscribe("$JS.API.CONSUMER.INFO.>", cb=looked_up.note)
    await nc.subscribe(f"{agent_inbox_prefix(CLUSTER)}.>", cb=looked_up.reply)
    try:
        # The registry declares what the agents' consumers live on, and makes each agent's consumer.
        async with registry_in_process(nats_server.url):
            yield Platform(url=nats_server.url, nc=own, services=nc, looked_up=looked_up)
    finally:
        await own.close()
        await nc.close()


async def test_the_agent_binds_to_the_consumer_its_hello_named_without_a_look_up(
    platform: Platform, nats_server: NatsServer, tmp_path: Path
) -> None:
    info = await call(
        platform.services, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=CLUSTER), ClusterConnectInfo
    )
    settings = AgentSettings(
        server=platform.url, token=info.token, state_dir=tmp_path / "agent", heartbeat_interval=0.5
    )
    async with Agent(settings) as agent:
        queue = agent.commands.queue
        await wait_for(lambda: queue.bound, what="the agent bound to its consumer", timeout=30)
        seq = await platform.probe(queue.stream)
        await wait_for(lambda: platform.delivered(queue.stream, seq), what="the probe taken", timeout=30)
        assert platform.looked_up.seen == [], "the agent looked up the consumer its hello had named"
        looked_up = platform.looked_up
        assert looked_up.by_all == [], "the first hello looked up the consumer its bootstrap had just made"

        # A reconnect to the same server: the agent fetches again and says hello, bound and fetching: neither
        # it nor the registry looks the consumer up.
        welcomed = looked_up.welcomes
        await agent.connection.force_reconnect()
        await wait_for(lambda: looked_up.welcomes > welcomed, what="the hello after the reconnect answered", timeout=30)
        seq = await platform.probe(queue.stream)
        await wait_for(lambda: platform.delivered(queue.stream, seq), what="the probe after the reconnect")
        assert looked_up.seen == [], "the agent looked its consumer up after a reconnect"
        assert looked_up.by_all == [], "the registry looked up the consumer of an agent bound to it"
        assert queue.declarations == 0

        # A restart of the lone NATS server: the consumer's state was in its memory, so the consumer is gone.
        # The agent's first fetch finds out, its hello says so, the registry makes the consumer again and names
        # it, and the agent binds to it without a look-up of its own.
        nats_server.stop()
        await asyncio.sleep(0.5)
        nats_server.start()
        await nats_server.wait_ready()
        await wait_for(lambda: agent.connection.is_connected and platform.nc.is_connected, what="reconnects")
        await wait_for(lambda: platform.consumer_exists(queue.stream), what="the consumer made again", timeout=30)
        seq = await platform.probe(queue.stream)
        await wait_for(lambda: platform.delivered(queue.stream, seq), what="the probe after the restart", timeout=30)
        assert queue.declarations >= 1
        assert looked_up.seen == [], "the agent looked up the consumer the registry had named"

        # The consumer goes away (as with its stream): the pull waiting on it is told at once (409 Consumer
        # Deleted), the agent asks, and the consumer is made again and named; still no look-up by the agent.
        asked = queue.declarations
        await platform.nc.jetstream().delete_consumer(queue.stream, subjects.agent_consumer(CLUSTER))
        await wait_for(lambda: queue.declarations > asked, what="the gone consumer asked for", timeout=30)
        await wait_for(lambda: platform.consumer_exists(queue.stream), what="the consumer made again", timeout=30)
        seq = await platform.probe(queue.stream)
        await wait_for(lambda: platform.delivered(queue.stream, seq), what="the probe on the new consumer", timeout=30)
        assert looked_up.seen == []


async def test_a_new_clusters_agent_says_no_first_hello(platform: Platform, tmp_path: Path) -> None:
    """Its consumer was made when the cluster was registered, so the bootstrap's answer is also the first hello's
    (a hello would only present the credential just issued): one request fewer per connect (issue 17, 10,000
    agents connecting). It binds to the consumer named and takes commands; after a reconnect it says hello."""
    info = await call(
        platform.services, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=CLUSTER), ClusterConnectInfo
    )
    assert await platform.consumer_exists(subjects.desired_stream(CLUSTER)), "no consumer made at the registration"
    settings = AgentSettings(
        server=platform.url, token=info.token, state_dir=tmp_path / "agent", heartbeat_interval=0.5
    )
    looked_up = platform.looked_up
    async with Agent(settings) as agent:
        queue = agent.commands.queue
        await wait_for(lambda: queue.bound, what="the agent bound to its consumer", timeout=30)
        assert agent.session.consumer == subjects.agent_consumer(CLUSTER)
        seq = await platform.probe(queue.stream)
        await wait_for(lambda: platform.delivered(queue.stream, seq), what="the probe taken", timeout=30)
        assert looked_up.welcomes == 0, "the agent said a first hello after its bootstrap"
        assert looked_up.by_all == []
        await agent.connection.force_reconnect()
        await wait_for(lambda: looked_up.welcomes == 1, what="the hello after the reconnect answered", timeout=30)


async def test_a_confirmed_consumer_that_is_gone_is_found_by_the_fetch_and_asked_for(
    platform: Platform, tmp_path: Path
) -> None:
    settings = AgentSettings(server=platform.url, state_dir=tmp_path)
    conn = await connect(settings, "queue", inbox_prefix=agent_inbox_prefix(CLUSTER))
    js = platform.nc.jetstream()
    made: list[asyncio.Task[bool]] = []

    async def make_and_name() -> bool:
        made_now = await ensure_agent_consumer(js, CLUSTER)
        queue.confirmed(queue.consumer)  # the welcome names it
        return made_now

    def missing() -> None:
        # What the hello asked for does: the platform makes the consumer again and names it in its answer.
        made.append(asyncio.ensure_future(make_and_name()))

    queue = CommandQueue(conn, CLUSTER, fetch_timeout=0.5, on_missing=missing)
    try:
        await ensure_agent_consumer(js, CLUSTER, look_up=False)
        queue.confirmed("agent-someone-else")  # not ours: changes nothing
        queue.confirmed(queue.consumer)
        assert await queue.next() is None  # bound, a quiet fetch
        assert queue.bound and platform.looked_up.seen == []
        seq = await platform.probe(queue.stream)
        delivery = await wait_for(queue.next, what="the probe")
        assert delivery.stream_seq == seq
        await delivery.ack()

        await js.delete_consumer(queue.stream, queue.consumer)

        async def delivered_again() -> bool:
            delivery = await queue.next()
            if delivery is None:
                return False
            await delivery.ack()
            return True

        async def probe_then_wait() -> bool:
            if not await platform.consumer_exists(queue.stream):
                return bool(await queue.next())  # let it find out and ask
            await platform.probe(queue.stream)
            return await delivered_again()

        await wait_for(probe_then_wait, what="commands again from the consumer made again", timeout=30)
        assert queue.declarations >= 1, "the missing consumer was never asked for"
        # Asked for at the fetch that found it gone, and bound again to the one named: never looked up.
        assert platform.looked_up.seen == []
    finally:
        await queue.close()
        await conn.close()
        for task in made:
            with contextlib.suppress(BaseException):
                await task


async def test_an_earlier_versions_consumer_is_made_again_by_the_sweep_and_its_agent_follows(
    platform: Platform, nats_server: NatsServer, tmp_path: Path
) -> None:
    """Agents that stay connected through an upgrade say they are bound: nothing looked their consumers up, so
    an earlier version's (its state in a file, fsynced after each delivery and ack) stayed. The registry's sweep
    makes it again with this version's config; the agent finds it gone at its next fetch and follows. It finds
    such consumers by listing them, not by a look-up each, and leaves consumers that are not agents' alone."""
    info = await call(
        platform.services, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=CLUSTER), ClusterConnectInfo
    )
    js, stream = platform.nc.jetstream(), subjects.desired_stream(CLUSTER)
    earlier = replace(agent_consumer_config(CLUSTER), mem_storage=False)  # as made until 2026-12-05
    await js.delete_consumer(stream, subjects.agent_consumer(CLUSTER))
    await js.add_consumer(stream, earlier)
    tap = ConsumerConfig(durable_name="operator-tap", filter_subject=earlier.filter_subject, mem_storage=False)
    await js.add_consumer(stream, tap)
    settings = AgentSettings(
        server=platform.url, token=info.token, state_dir=tmp_path / "agent", heartbeat_interval=0.5
    )
    bus = await NatsBus.connect(BusSettings(url=platform.url), "sweep-test")
    try:
        async with Agent(settings) as agent:
            queue = agent.commands.queue
            await wait_for(lambda: queue.bound, what="the agent bound to the earlier consumer", timeout=30)
            seq = await platform.probe(stream)
            await wait_for(lambda: platform.delivered(stream, seq), what="the probe taken", timeout=30)

            made = await sweep_consumers(bus, lambda: [CLUSTER], delay=0.0, rate=100.0)
            assert made == 1
            found = await js.consumer_info(stream, subjects.agent_consumer(CLUSTER), timeout=5)
            assert found.config.mem_storage, "made again with this version's config"
            seq = await platform.probe(stream)
            await wait_for(lambda: platform.delivered(stream, seq), what="the probe on the new consumer", timeout=30)
            looked_up = len(platform.looked_up.by_all)
            assert await sweep_consumers(bus, lambda: [CLUSTER], delay=0.0, rate=100.0) == 0, "checked, kept"
            assert len(platform.looked_up.by_all) == looked_up, "listed, not looked up one by one"
            kept = await js.consumer_info(stream, "operator-tap", timeout=5)
            assert not kept.config.mem_storage, "a consumer that is not an agent's is left as it was"
    finally:
        await bus.close()
