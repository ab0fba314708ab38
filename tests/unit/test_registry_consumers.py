"""The registry's background creation of new clusters' command consumers (``services.registry.consumers``)."""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import (
    AGENT_PROTOCOL,
    AgentBootstrap,
    AgentCredentials,
    AgentHello,
    ClusterCreate,
    ClusterEvent,
    ClusterRecord,
    ClusterUidClaim,
    NameRequest,
    ProjectRecord,
    decode,
)
from services.bus import Delivery
from services.bus.memory import MemoryBus
from services.registry.consumers import NewConsumers
from services.registry.service import Registry, Settings
from tests.harness import wait_for


class SlowBus(MemoryBus):
    """Creations wait for ``release``; ``fail`` makes them fail; counts creations running at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.fail = False
        self.running = 0
        self.most = 0
        self.looked_up: list[bool] = []

    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        self.looked_up.append(look_up)
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.wait_for(self.release.wait(), 5)
            if self.fail:
                raise Unavailable("JetStream did not answer")
            return await super().ensure_agent_consumer(cluster, look_up=look_up)
        finally:
            self.running -= 1


def rig(concurrency: int) -> tuple[SlowBus, NewConsumers]:
    bus = SlowBus()
    return bus, NewConsumers(bus, concurrency=concurrency)


async def test_a_hello_waits_for_the_creation_and_then_needs_no_look_up() -> None:
    bus, consumers = rig(4)
    await consumers.start("c1")
    hello = asyncio.ensure_future(consumers.settled("c1"))
    await asyncio.sleep(0.05)
    assert not hello.done()  # still creating
    bus.release.set()
    assert await asyncio.wait_for(hello, 5) is True
    assert bus.looked_up == [False]
    # Only the first hello after the bootstrap: a later one looks it up itself.
    assert await consumers.settled("c1") is False


async def test_a_failed_creation_leaves_it_to_the_hello() -> None:
    bus, consumers = rig(4)
    bus.fail = True
    bus.release.set()
    await consumers.start("c1")
    assert await consumers.settled("c1") is False
    assert await consumers.settled("never-bootstrapped") is False


async def test_bootstraps_wait_for_a_slot_so_creations_stay_bounded() -> None:
    bus, consumers = rig(2)
    await consumers.start("c1")
    await consumers.start("c2")
    third = asyncio.ensure_future(consumers.start("c3"))
    await asyncio.sleep(0.05)
    assert not third.done() and bus.most == 2
    bus.release.set()
    await asyncio.wait_for(third, 5)
    assert all([await consumers.settled(c) for c in ("c1", "c2", "c3")])
    assert bus.most == 2


async def test_close_cancels_what_is_still_running() -> None:
    bus, consumers = rig(2)
    await consumers.start("c1")
    await asyncio.wait_for(consumers.close(), 5)
    assert bus.running == 0
    assert await consumers.settled("c1") is False


async def test_a_second_bootstrap_replaces_the_first_creation() -> None:
    bus, consumers = rig(4)
    await consumers.start("c1")
    await consumers.start("c1")
    bus.release.set()
    assert await consumers.settled("c1") is True
    await consumers.close()


async def bootstrapped_registry(bus: SlowBus) -> Registry:
    """A registry on ``bus`` (no NATS identities), one consumer created at a time."""
    await bus.declare_streams("platform")
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord, history=5)
    uids = await bus.bucket(subjects.BUCKET_CLUSTER_UIDS, ClusterUidClaim)
    projects = await bus.bucket(subjects.BUCKET_PROJECTS, ProjectRecord, history=5)
    return Registry(Settings(consumer_creations=1), bus, clusters, uids, projects)


async def bootstrap(registry: Registry, name: str, token: str, protocol: int = AGENT_PROTOCOL) -> AgentCredentials:
    return await registry.bootstrap(AgentBootstrap(token=token, cluster_uid=f"uid-{name}", protocol=protocol), name)


def first_hello(name: str, credential: str) -> AgentHello:
    return AgentHello(
        cluster=name, credential=credential, cluster_uid=f"uid-{name}", protocol=AGENT_PROTOCOL, consumer_bound=False
    )


async def test_registration_makes_the_consumer_so_the_connect_neither_creates_nor_looks_it_up() -> None:
    """nats-server makes consumers one after the other (≈ 120/s in a connect storm of 10,000): made when the
    cluster is registered, before its agent can connect, the bootstrap waits for no creation slot and answers
    the first hello with the credentials (the consumer named). An agent that says hello anyway (an older one)
    gets its consumer looked up, as any hello after that."""
    bus = SlowBus()
    bus.release.set()
    registry = await bootstrapped_registry(bus)
    info = await registry.create(ClusterCreate(name="c1"))
    assert bus.looked_up == [False]
    assert await bus.forget_agent_commands("c1") == [f"desired-state consumer {subjects.agent_consumer('c1')}"]
    await bus.ensure_agent_consumer("c1")  # put back; the record of calls starts again
    bus.looked_up.clear()
    bus.release.clear()  # from here a creation or look-up would hang until the test's deadline
    answer = await asyncio.wait_for(bootstrap(registry, "c1", info.token), 2)
    assert answer.welcome is not None
    assert answer.welcome.consumer == subjects.agent_consumer("c1") and answer.welcome.cluster == "c1"
    assert answer.welcome.heartbeat_interval == registry.settings.heartbeat_interval
    assert bus.looked_up == []
    hello = asyncio.ensure_future(registry.hello(first_hello("c1", answer.credential), "c1"))
    await wait_for(lambda: bus.looked_up == [True], what="the hello's look-up", timeout=5)
    bus.release.set()
    assert (await asyncio.wait_for(hello, 5)).consumer == subjects.agent_consumer("c1")


async def test_no_welcome_with_the_credentials_when_the_registration_made_no_consumer() -> None:
    """Its creation failed (or another registry process issued the token): the bootstrap creates it beside
    itself and the agent's hello waits for that, as before."""
    bus = SlowBus()
    bus.fail = True
    bus.release.set()
    registry = await bootstrapped_registry(bus)
    info = await registry.create(ClusterCreate(name="c1"))
    bus.fail = False
    answer = await asyncio.wait_for(bootstrap(registry, "c1", info.token), 5)
    assert answer.welcome is None
    welcome = await asyncio.wait_for(registry.hello(first_hello("c1", answer.credential), "c1"), 5)
    assert welcome.consumer == subjects.agent_consumer("c1")
    assert bus.looked_up == [False, False]  # at registration (failed), beside the bootstrap; no look-up


async def test_a_disconnect_forgets_the_consumer_made_at_registration() -> None:
    bus = SlowBus()
    bus.release.set()
    registry = await bootstrapped_registry(bus)
    info = await registry.create(ClusterCreate(name="c1"))
    await registry.disconnect(NameRequest(name="c1"))
    assert await bus.forget_agent_commands("c1") == []  # deleted
    again = await registry.create(ClusterCreate(name="c1", rotate_token=True))
    assert await registry.new_consumers.settled("c1") is True  # made again at the new registration
    assert again.token != info.token


async def test_the_connected_event_is_stored_while_the_bootstrap_waits_for_a_creation_slot() -> None:
    """Both before the answer, beside each other: a bootstrap waiting for a free creation slot (200-250 ms at
    1,000-10,000 agents) does not then wait for its event's write too. (Registrations whose creation failed:
    their bootstraps make the consumers.)"""
    bus = SlowBus()
    registry = await bootstrapped_registry(bus)
    bus.fail = True
    bus.release.set()
    tokens = {n: (await registry.create(ClusterCreate(name=n))).token for n in ("c0", "c1")}
    bus.fail = False
    bus.release.clear()
    connected: list[str] = []

    async def heard(delivery: Delivery) -> None:
        connected.append(decode(delivery.data, ClusterEvent).cluster)

    await bus.subscribe(subjects.public_event("cluster.connected"), heard)
    await bootstrap(registry, "c0", tokens["c0"])  # its creation holds the only slot until released
    second = asyncio.ensure_future(bootstrap(registry, "c1", tokens["c1"]))
    await wait_for(lambda: "c1" in connected, what="c1's connected event while it waits for a slot", timeout=5)
    assert not second.done()  # still waiting for the slot: not answered before its consumer's creation starts
    bus.release.set()
    answer = await asyncio.wait_for(second, 5)
    assert answer.cluster == "c1" and answer.credential
    assert connected == ["c0", "c1"]
    assert all([await registry.new_consumers.settled(c) for c in ("c0", "c1")])


async def test_an_agent_of_an_older_protocol_gets_no_welcome() -> None:
    """The first hello is where an agent of an older protocol is told to upgrade: its bootstrap (which says no
    protocol, as agents older than the field) is answered without the welcome, so it says hello."""
    bus = SlowBus()
    bus.release.set()
    registry = await bootstrapped_registry(bus)
    info = await registry.create(ClusterCreate(name="c1"))
    answer = await asyncio.wait_for(bootstrap(registry, "c1", info.token, protocol=1), 2)
    assert answer.welcome is None
