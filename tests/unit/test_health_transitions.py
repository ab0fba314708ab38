"""Health's transitions are written beside the heartbeats: many clusters' at once, each cluster's in order.

Before, the heartbeat handler waited for each transition's two fsynced writes (the presence record, the public
event), one at a time: 10,000 agents connecting together were all up by 40 s while health had shown 4,938 of
them online (``tests/bench/RESULTS.md``, twenty-second stop)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from schemas import subjects
from schemas.messages import ClusterEvent, ClusterHealth, Heartbeat, Presence, encode
from services.bus import Delivery
from services.bus.memory import MemoryBus
from services.bus.memory_parts import MemoryRecords
from services.health.service import HealthMonitor, Settings
from services.health.transitions import TransitionWriter, lane_of
from tests.harness import wait_for

DEADLINE = 5.0


class HeldRecords(MemoryRecords[Presence]):
    """A presence bucket whose creations wait for ``release``, counting how many wait at once."""

    def __init__(self) -> None:
        super().__init__(subjects.BUCKET_PRESENCE, Presence)
        self.release = asyncio.Event()
        self.waiting = 0
        self.most_waiting = 0

    async def create(self, key: str, value: Presence) -> int:
        self.waiting += 1
        self.most_waiting = max(self.most_waiting, self.waiting)
        try:
            await self.release.wait()
        finally:
            self.waiting -= 1
        return await super().create(key, value)


async def heartbeat(monitor: HealthMonitor, name: str, at: float) -> None:
    hb = Heartbeat(cluster=name, session="s", seq=1, sent_at=at, health=ClusterHealth())
    await monitor.on_heartbeat(Delivery(subjects.heartbeat(name), encode(hb)))


async def online_events(bus: MemoryBus) -> set[str]:
    since = datetime.fromtimestamp(0, UTC)
    events = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), since, ClusterEvent)
    return {e.cluster for e in events if e.kind == "online"}


async def test_first_heartbeats_are_handled_while_their_writes_wait_and_many_are_written_at_once() -> None:
    bus = MemoryBus()
    await bus.declare_streams("platform")
    bucket = HeldRecords()
    monitor = HealthMonitor(Settings(transition_lanes=8), bus, bucket, clock=lambda: 100.0)
    monitor.transitions.start()
    names = [f"c{i:03d}" for i in range(40)]
    try:
        async with asyncio.timeout(DEADLINE):  # the old handler waited for each write: stuck on the first
            for name in names:
                await heartbeat(monitor, name, 100.0)
        assert all(monitor.presence[n].online for n in names), "answered online from memory at once"
        await wait_for(lambda: bucket.waiting == 8, timeout=DEADLINE, interval=0.01, what="a write in every lane")
        lanes_used = len({lane_of(n, 8) for n in names})
        assert bucket.most_waiting == lanes_used == 8, "one write per lane at a time, all lanes at once"
        assert await online_events(bus) == set(), "an event only once its record is written"
        bucket.release.set()
        async with asyncio.timeout(DEADLINE):
            await monitor.transitions.settled()
        assert await online_events(bus) == set(names)
        stored = await bucket.items()
        assert set(stored) == set(names) and all(p.online for p in stored.values())
    finally:
        bucket.release.set()
        await monitor.transitions.stop()


async def test_one_clusters_writes_keep_their_order_and_a_failing_one_does_not_end_its_lane() -> None:
    done: list[str] = []
    first_may_end = asyncio.Event()
    writer = TransitionWriter(lanes=4, depth=16)
    writer.start()

    async def slow_online() -> None:
        await first_may_end.wait()
        done.append("a online")

    async def offline() -> None:
        done.append("a offline")

    async def broken() -> None:
        raise RuntimeError("a store that fails unexpectedly")

    async def purge() -> None:
        done.append("a purged")

    try:
        await writer.submit("a", slow_online)
        await writer.submit("a", offline)
        await writer.submit("a", broken)
        await writer.submit("a", purge)
        others = [f"b{i}" for i in range(20) if lane_of(f"b{i}", 4) != lane_of("a", 4)]
        for name in others:

            async def other(name: str = name) -> None:
                done.append(name)

            await writer.submit(name, other)
        await wait_for(lambda: len(done) == len(others), timeout=DEADLINE, interval=0.01, what="the other lanes")
        assert sorted(done) == sorted(others), "other lanes are not held by a's slow write"
        assert writer.pending == 4
        first_may_end.set()
        async with asyncio.timeout(DEADLINE):
            await writer.settled()
        assert [d for d in done if d.startswith("a ")] == ["a online", "a offline", "a purged"]
        assert writer.pending == 0
    finally:
        first_may_end.set()
        await writer.stop()
        await writer.stop()  # safe twice


async def test_a_full_lane_holds_the_submitter_and_stop_writes_what_is_queued() -> None:
    release = asyncio.Event()
    written: list[int] = []
    writer = TransitionWriter(lanes=1, depth=2)
    writer.start()

    def step(i: int) -> object:
        async def write() -> None:
            await release.wait()
            written.append(i)

        return write

    await writer.submit("c", step(0))  # taken by the lane, waiting
    await asyncio.sleep(0)
    await writer.submit("c", step(1))
    await writer.submit("c", step(2))  # the lane's queue is full now
    third = asyncio.create_task(writer.submit("c", step(3)))
    await asyncio.sleep(0.05)
    assert not third.done(), "a full lane makes the submitter wait"
    release.set()
    async with asyncio.timeout(DEADLINE):
        await third
    await writer.stop()
    assert written == [0, 1, 2, 3], "stop writes what was queued"


async def test_a_flush_does_not_write_a_presence_whose_transition_is_still_queued() -> None:
    """Written first by the flush (later heartbeats made the cluster dirty), the transition would read it as
    already recorded by another replica and never publish the cluster's online event."""
    bus = MemoryBus()
    await bus.declare_streams("platform")
    bucket = await bus.bucket(subjects.BUCKET_PRESENCE, Presence)
    monitor = HealthMonitor(Settings(), bus, bucket, clock=lambda: 100.0)
    # The lanes not started yet: the transition stays queued, as behind a backlog.
    await heartbeat(monitor, "c1", 100.0)
    await heartbeat(monitor, "c1", 100.0)  # a later heartbeat: nothing to announce, only to flush
    assert "c1" in monitor.dirty
    await monitor.flush_once()
    assert await bucket.get("c1") is None, "flushed before its transition"
    assert "c1" in monitor.dirty, "left for a later flush"
    monitor.transitions.start()
    try:
        async with asyncio.timeout(DEADLINE):
            await monitor.transitions.settled()
        assert await online_events(bus) == {"c1"}
        assert monitor.transiting == {}
        await monitor.flush_once()
        stored = await bucket.get("c1")
        assert stored is not None and stored[0].online
    finally:
        await monitor.transitions.stop()
