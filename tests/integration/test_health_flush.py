"""Health's last-seen flush against a real nats-server: two replicas writing one presence bucket."""

from __future__ import annotations

from nats.aio.client import Client

from schemas import subjects
from schemas.messages import ClusterHealth, Heartbeat, Presence
from services.bus import ensure_bucket
from services.bus.memory import MemoryBus
from services.health import logic
from services.health.service import HealthMonitor, Settings
from tests.harness import CountingBucket


def beat(monitor: HealthMonitor, cluster: str, now: float) -> None:
    """What ``on_heartbeat`` does with a heartbeat of an online cluster: note it, flush it later."""
    hb = Heartbeat(cluster=cluster, session="s", seq=1, sent_at=now, health=ClusterHealth())
    monitor.presence[cluster], _ = logic.observe(monitor.presence.get(cluster), hb, now)
    monitor.dirty.add(cluster)


async def test_flush_writes_without_reading_and_never_goes_back_in_time(nc: Client) -> None:
    js = nc.jetstream()
    plain = await ensure_bucket(js, subjects.BUCKET_PRESENCE, Presence, replicas=1)
    a_bucket = CountingBucket[Presence](plain.kv, Presence)
    every = Settings(seen_write_interval=0.0)  # every newer last-seen time is written
    events = MemoryBus()  # a flush publishes nothing: only the bucket is real here
    a = HealthMonitor(every, events, a_bucket)
    b = HealthMonitor(every, events, plain)

    async def stored() -> float:
        found = await plain.get("c1")
        assert found is not None
        return found[0].last_seen

    beat(a, "c1", 100.0)
    await a.flush_once()
    beat(a, "c1", 110.0)
    reads = a_bucket.reads
    await a.flush_once()
    assert await stored() == 110.0
    assert a_bucket.reads == reads, "a replica's own last write is the base of its next one: no read"

    beat(b, "c1", 120.0)  # the other replica heard a later heartbeat
    await b.flush_once()
    beat(a, "c1", 115.0)
    await a.flush_once()
    assert await stored() == 120.0, "an older last-seen never overwrites a newer one"
    assert not a.dirty

    beat(a, "c1", 130.0)
    await a.flush_once()
    assert await stored() == 130.0
    assert not a.dirty and not b.dirty


class WriteCountingBucket(CountingBucket[Presence]):
    writes = 0

    async def create(self, key: str, value: Presence) -> int:
        self.writes += 1
        return await super().create(key, value)

    async def update(self, key: str, value: Presence, revision: int) -> int:
        self.writes += 1
        return await super().update(key, value, revision)


async def test_refreshes_due_together_are_written_at_the_allowance_pace_and_changes_are_not_held(
    nc: Client,
) -> None:
    plain = await ensure_bucket(nc.jetstream(), subjects.BUCKET_PRESENCE, Presence, replicas=1)
    bucket = WriteCountingBucket(plain.kv, Presence)
    # 2 refreshes a second, a flush every 2 s: 4 per flush.
    settings = Settings(seen_write_interval=60.0, seen_writes_per_second=2.0, flush_interval=2.0)
    monitor = HealthMonitor(settings, MemoryBus(), bucket)
    fleet = [f"c{i}" for i in range(10)]
    for name in fleet:
        beat(monitor, name, 100.0)
    await monitor.flush_once()
    assert bucket.writes == 10, "first writes of a cluster are not refreshes"

    for name in fleet:  # the whole fleet came online together: all due again together
        beat(monitor, name, 161.0)
    sick = Heartbeat(cluster="c0", session="s", seq=2, sent_at=161.0, health=ClusterHealth(nodes_ready=1))
    monitor.presence["c0"], _ = logic.observe(monitor.presence["c0"], sick, 161.0)
    await monitor.flush_once()
    assert bucket.writes == 10 + 1 + 4, "the change of c0's health, and four refreshes"
    assert len(monitor.dirty) == 5, "the rest wait, still to be written"
    await monitor.flush_once()
    await monitor.flush_once()
    assert bucket.writes == 10 + 1 + 9 and not monitor.dirty
    for name in fleet:
        found = await bucket.get(name)
        assert found is not None and found[0].last_seen == 161.0
