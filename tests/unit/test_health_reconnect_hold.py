"""Health after a restart: a cluster it has not heard yet is not judged while the fleet is still coming back.

Before: every cluster not reconnected within ``offline_after`` of health's start was marked offline and,
seconds later, online again (two fsynced writes and two public events each, in the heartbeats' path): about
half of 10,000 clusters in a restart. A cluster that died meanwhile is still shown offline, once first
heartbeats stop arriving (bounded by ``reconnect_hold``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from schemas import subjects
from schemas.messages import ClusterEvent, ClusterHealth, Heartbeat, NameRequest, Presence, encode
from services.bus import Delivery
from services.bus.memory import MemoryBus
from services.health import logic
from services.health.service import HealthMonitor, Settings

START = 1_000.0
"""When the restarted replica starts listening (the platform's clock, driven by the test)."""


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def restarted(names: list[str], settings: Settings) -> AsyncIterator[tuple[HealthMonitor, Clock, MemoryBus]]:
    """A replica started at ``START`` over presence stored before the restart (all online, last seen 990)."""
    bus = MemoryBus()
    await bus.declare_streams("platform")
    bucket = await bus.bucket(subjects.BUCKET_PRESENCE, Presence)
    for name in names:
        hb = Heartbeat(cluster=name, session="s", seq=1, sent_at=990.0, health=ClusterHealth())
        await bucket.create(name, logic.observe(None, hb, 990.0)[0])
    clock = Clock()
    monitor = HealthMonitor(settings, bus, bucket, clock=clock)
    await monitor.load()
    monitor.transitions.start()
    try:
        yield monitor, clock, bus
    finally:
        await monitor.transitions.stop()


async def published(bus: MemoryBus) -> list[tuple[str, str]]:
    """The public cluster events stored so far: (kind, cluster)."""
    since = datetime.fromtimestamp(0, UTC)
    events = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), since, ClusterEvent)
    return [(e.kind, e.cluster) for e in events]


async def beat(monitor: HealthMonitor, clock: Clock, name: str, at: float) -> None:
    clock.now = at
    hb = Heartbeat(cluster=name, session="s", seq=2, sent_at=at, health=ClusterHealth())
    await monitor.on_heartbeat(Delivery(subjects.heartbeat(name), encode(hb)))
    await monitor.transitions.settled()


async def sweep(monitor: HealthMonitor, clock: Clock, at: float) -> list[str]:
    clock.now = at
    await monitor.sweep_once()
    await monitor.transitions.settled()  # the transitions' records and events written
    return sorted(name for name, p in monitor.presence.items() if not p.online)


async def test_clusters_still_reconnecting_are_not_marked_offline_and_a_dead_one_is_after_the_fleet_is_back() -> None:
    names = [f"c{i}" for i in range(5)]
    async with restarted(names, Settings(offline_after=12.0, reconnect_hold=60.0)) as (monitor, clock, bus):
        # The fleet comes back over 19 s, one cluster every 6 s, each then beating every 3 s; c4 died meanwhile.
        back = {names[i]: START + 1.0 + 6.0 * i for i in range(4)}
        for second in range(1, 31):
            at = START + second
            for name, since in back.items():
                if at >= since and (at - since) % 3.0 == 0.0:
                    await beat(monitor, clock, name, at)
            offline = await sweep(monitor, clock, at + 0.5)
            assert offline == [], f"{offline} offline {second + 0.5} s after the start (old code: from 12.5 s)"
        assert await published(bus) == [], "no cluster went offline and online again"
        # The last first heartbeat was at START + 19: the dead cluster is offline 12 s later.
        assert await sweep(monitor, clock, START + 31.5) == ["c4"]
        assert await published(bus) == [("offline", "c4")]


async def test_the_hold_is_bounded_and_a_cluster_heard_since_is_judged_as_always() -> None:
    names = ["alive", "dead", "died-after"]
    async with restarted(names, Settings(offline_after=12.0, reconnect_hold=20.0)) as (monitor, clock, _bus):
        await beat(monitor, clock, "died-after", START + 1.0)  # heard once since the restart, then silent
        # New clusters keep arriving for a minute (each a first heartbeat): the hold ends 20 s after the start.
        for i in range(60):
            await beat(monitor, clock, f"new-{i}", START + 2.0 + i)
            await beat(monitor, clock, "alive", START + 2.0 + i)
            offline = await sweep(monitor, clock, START + 2.5 + i)
            if START + 2.5 + i <= START + 13.0:
                assert "died-after" not in offline
            elif START + 2.5 + i > START + 13.0:
                assert "died-after" in offline, "heard since the restart: offline 12 s after its last heartbeat"
            if START + 2.5 + i <= START + 32.0:
                assert "dead" not in offline, START + 2.5 + i
            else:
                assert "dead" in offline, "never later than the hold plus offline_after"
            assert "alive" not in offline


async def test_a_cluster_online_as_stored_but_not_heard_since_the_restart_is_answered_as_unheard() -> None:
    async with restarted(["back", "later"], Settings(offline_after=12.0, reconnect_hold=60.0)) as (
        monitor,
        clock,
        _bus,
    ):
        await beat(monitor, clock, "back", START + 1.0)
        back = await monitor.get(NameRequest(name="back"))
        later = await monitor.get(NameRequest(name="later"))
        assert back.online and not back.unheard
        assert later.online and later.unheard, "the gateway tells kubectl to retry while it reconnects"
        stored = await monitor.bucket.get("later")
        assert stored is not None and not stored[0].unheard, "never stored"
        await beat(monitor, clock, "later", START + 2.0)
        assert not (await monitor.get(NameRequest(name="later"))).unheard
