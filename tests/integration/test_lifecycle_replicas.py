"""Two lifecycle replicas on one desired-state bucket (real nats-server): each writes on top of the record it
wrote last without reading it first, and a write by the other one is never missed or overwritten."""

from __future__ import annotations

from schemas import subjects
from schemas.messages import (
    Action,
    WorkloadAction,
    WorkloadName,
    WorkloadRecord,
    WorkloadRef,
    desired_key,
    workload_key,
)
from services.bus import Bus
from services.lifecycle import logic
from services.lifecycle.service import Lifecycle, Settings
from services.lifecycle.shards import Shards, open_shards
from tests.harness import CountingBucket
from tests.lifecycle_records import new_tenant, report

KEY = desired_key("c1", workload_key(WorkloadRef(kind="tenant", project="p1", name="t1")))


def act(action: Action) -> WorkloadAction:
    return WorkloadAction(kind="tenant", project="p1", name="t1", action=action, by="u")


async def test_replicas_write_on_top_of_their_own_writes_and_see_each_others(lifecycle_bus: Bus) -> None:
    await lifecycle_bus.declare_streams("platform", "commands")
    shards = await open_shards(lifecycle_bus)
    names = await lifecycle_bus.bucket(subjects.BUCKET_WORKLOAD_NAMES, WorkloadName)
    plain = shards.of("c1")
    # Replica a counts its reads of c1's desired-state bucket and of the names' bucket.
    a_bucket = CountingBucket[WorkloadRecord](plain.kv, WorkloadRecord)  # type: ignore[attr-defined]
    a_names = CountingBucket[WorkloadName](names.kv, WorkloadName)  # type: ignore[attr-defined]
    a_shards = Shards([a_bucket if bucket is plain else bucket for bucket in shards.buckets])
    a = Lifecycle(Settings(), lifecycle_bus, a_shards, a_names)
    b = Lifecycle(Settings(), lifecycle_bus, shards, names)
    seed = new_tenant("op-create")
    await names.create(workload_key(seed.spec), WorkloadName(cluster="c1", at=0.0))
    await plain.create(KEY, seed)

    async def stored() -> WorkloadRecord:
        found = await plain.get(KEY)
        assert found is not None
        return found[0]

    slept = await a.workloads.action(act("sleep"))  # nothing remembered yet: read
    await a.results.record(report(slept), "c1")
    reads = a_bucket.reads, a_names.reads
    woken = await a.workloads.action(act("wake"))
    await a.results.record(report(woken), "c1")
    assert (a_bucket.reads, a_names.reads) == reads, "a replica writes on top of its own last write without a read"
    assert logic.in_sync(await stored()) and (await stored()).spec.state == "running"

    # The other replica puts it to sleep; a's memory of it ("running", in sync) is now old.
    other = await b.workloads.action(act("sleep"))
    assert other.generation == woken.generation + 1
    # a is asked to wake it: from its old memory that would be "already running, nothing to do".
    again = await a.workloads.action(act("wake"))
    assert again.generation == other.generation + 1 and again.spec.state == "running"
    assert (await stored()).generation == again.generation

    # Results: b records the wake's; then a gets the same result again (the agent asked again after a lost
    # answer) while it remembers the record before b's write: it reads, finds it recorded, writes nothing.
    delivered = report(again)
    assert (await b.results.record(delivered, "c1")).outcome == "recorded"
    recorded = await stored()
    assert recorded.observed is not None and recorded.observed.generation == again.generation
    assert (await a.results.record(delivered, "c1")).outcome == "already"
    now = await stored()
    assert now == recorded, "the repeat wrote nothing"
    # And a's next action starts from what is stored, b's write included.
    last = await a.workloads.action(act("sleep"))
    assert last.generation == again.generation + 1 and last.observed == now.observed
