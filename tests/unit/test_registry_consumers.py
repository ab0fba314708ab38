"""The registry's background creation of new clusters' command consumers (``services.registry.consumers``)."""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import (
    AgentBootstrap,
    AgentCredentials,
    ClusterCreate,
    ClusterEvent,
    ClusterRecord,
    ClusterUidClaim,
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


async def bootstrap(registry: Registry, name: str) -> AgentCredentials:
    info = await registry.create(ClusterCreate(name=name))
    return await registry.bootstrap(AgentBootstrap(token=info.token, cluster_uid=f"uid-{name}"), name)


async def test_the_connected_event_is_stored_while_the_bootstrap_waits_for_a_creation_slot() -> None:
    """Both before the answer, beside each other: a bootstrap waiting for a free creation slot (200-250 ms at
    1,000-10,000 agents) does not then wait for its event's write too."""
    bus = SlowBus()
    registry = await bootstrapped_registry(bus)
    connected: list[str] = []

    async def heard(delivery: Delivery) -> None:
        connected.append(decode(delivery.data, ClusterEvent).cluster)

    await bus.subscribe(subjects.public_event("cluster.connected"), heard)
    await bootstrap(registry, "c0")  # its creation holds the only slot until released
    second = asyncio.ensure_future(bootstrap(registry, "c1"))
    await wait_for(lambda: "c1" in connected, what="c1's connected event while it waits for a slot", timeout=5)
    assert not second.done()  # still waiting for the slot: not answered before its consumer's creation starts
    bus.release.set()
    answer = await asyncio.wait_for(second, 5)
    assert answer.cluster == "c1" and answer.credential
    assert connected == ["c0", "c1"]
    assert all([await registry.new_consumers.settled(c) for c in ("c0", "c1")])
