"""Lifecycle's desired state under cluster-first keys in its cluster's bucket, on both buses: lookups by
reference, one live record per name whatever its cluster (c1 and c2 are in different buckets), a name whose
record never arrived, and the migration from earlier versions' one bucket (two replicas starting at once)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest

from schemas import subjects
from schemas.errors import Conflict, Internal, InvalidInput
from schemas.messages import (
    CommandResult,
    Membership,
    ProjectRecord,
    WorkloadCreate,
    WorkloadName,
    WorkloadRecord,
    desired_key,
    workload_key,
)
from services.bus import Bus, Records
from services.lifecycle import logic
from services.lifecycle.migration import move_retired
from services.lifecycle.names import NAME_LEASE
from services.lifecycle.shards import open_shards
from services.lifecycle.store import Desired
from tests.harness import wait_for


def record(name: str, cluster: str, generation: int = 1) -> WorkloadRecord:
    created = logic.new_record(
        WorkloadCreate(kind="tenant", project="p1", name=name, cluster=cluster, created_by="u"),
        ProjectRecord(name="p1"),
        cluster,
        Membership(project="p1"),
        time.time(),
        f"op-{name}-{generation}",
    )
    return msgspec.structs.replace(created, generation=generation)


async def desired(bus: Bus) -> Desired:
    return Desired(await open_shards(bus), await bus.bucket(subjects.BUCKET_WORKLOAD_NAMES, WorkloadName))


def test_the_clusters_here_are_in_different_buckets() -> None:
    assert subjects.desired_shard("c1") != subjects.desired_shard("c2")


async def test_a_name_has_one_live_record_whatever_its_cluster(bus: Bus) -> None:
    a, b = await desired(bus), await desired(bus)  # two replicas
    k = "tenant.p1.t1"
    # Two replicas place the same new name on two clusters at once: one wins.
    outcome = await asyncio.gather(
        a.write(k, record("t1", "c1"), None), b.write(k, record("t1", "c2"), None), return_exceptions=True
    )
    assert sorted(type(o).__name__ for o in outcome) == ["Conflict", "int"], outcome
    found = await a.get(k)
    assert found is not None
    first, revision = found
    stored = await a.shards.of(first.spec.cluster).get(desired_key(first.spec.cluster, k))
    assert stored is not None and stored[0] == first
    assert len(await a.all_records()) == 1

    # Deleted (a tombstone), then created again on the other cluster: the lookup finds the new one.
    other = "c2" if first.spec.cluster == "c1" else "c1"
    tombstone = logic.confirm_deleted(msgspec.structs.replace(first, spec=first.spec), time.time())
    gone = msgspec.structs.replace(
        tombstone, spec=msgspec.structs.replace(first.spec, state="deleted"), generation=first.generation
    )
    at = await a.write(k, gone, revision)
    again = await b.write(k, record("t1", other, generation=first.generation + 1), at)
    now = await a.get(k)
    assert now is not None and now[0].spec.cluster == other and now[1] == again
    # A stale write at the old place (a replica that remembers the tombstone) is refused.
    with pytest.raises(Conflict):
        await a.write(k, gone, at)
    # b's write reaches a's kept records through the bucket's watch (another replica's: within a deadline).
    await wait_for(
        lambda: [r.spec.cluster for r in (a._view.values() if a._view else [])] == [other],
        timeout=5,
        what="the other replica's create in the kept records",
    )
    assert await a.get("tenant.p1.none") is None


async def test_the_one_bucket_of_earlier_versions_moves_once_with_two_replicas_at_once(bus: Bus) -> None:
    old = await bus.bucket(subjects.RETIRED_DESIRED_BUCKET, WorkloadRecord, history=5)
    records = {f"t{i}": record(f"t{i}", f"c{i % 3}", generation=i + 1) for i in range(12)}
    for name, r in records.items():
        k = workload_key(r.spec)
        # How earlier versions stored them: cluster first, and a few under the key form before that.
        await old.put(k if name in ("t0", "t4") else desired_key(r.spec.cluster, k), r)
    # A name deleted on c2 and live again on c0: both records were kept, the live one is the name's.
    t0 = records["t0"]
    gone = logic.confirm_deleted(
        msgspec.structs.replace(t0, spec=msgspec.structs.replace(t0.spec, cluster="c2", state="deleted")), 1.0
    )
    await old.put(desired_key("c2", workload_key(t0.spec)), gone)
    # The same record under both key forms (an earlier move cut short): moved once.
    t5 = records["t5"]
    await old.put(workload_key(t5.spec), t5)
    a, b = await desired(bus), await desired(bus)

    moved = await asyncio.gather(
        move_retired(bus, a.shards, a.names.bucket), move_retired(bus, b.shards, b.names.bucket)
    )
    assert sum(moved) == len(records) + 1, moved
    assert await bus.retired_bucket(subjects.RETIRED_DESIRED_BUCKET, WorkloadRecord) is None, "deleted"
    for name, r in records.items():
        k = workload_key(r.spec)
        assert await a.get(k) is not None, name
        found = await b.get(k)
        assert found is not None and found[0] == r, name
        stored = await a.shards.of(r.spec.cluster).get(desired_key(r.spec.cluster, k))
        assert stored is not None and stored[0] == r
    assert await a.shards.of("c2").get(desired_key("c2", workload_key(t0.spec))) is not None, "the tombstone too"
    assert sorted(r.spec.name for r in await a.all_records()) == sorted(records)
    assert await move_retired(bus, a.shards, a.names.bucket) == 0, "idempotent"


async def test_a_name_whose_record_never_arrived_is_free_again_after_its_lease(bus: Bus) -> None:
    """A creator that failed between the name's entry and the record leaves the entry: another creator on
    another cluster is told the name is being created, until ``NAME_LEASE`` has passed; then it may."""
    store = await desired(bus)
    k = "tenant.p1.t1"
    now = time.time()
    await store.names.bucket.create(k, WorkloadName(cluster="c1", at=now))  # and then the creator died
    assert await store.get(k) is None
    with pytest.raises(Conflict, match="being created on c1"):
        await store.write(k, record("t1", "c2"), None)
    store.names._clock = lambda: now + NAME_LEASE + 1
    revision = await store.write(k, record("t1", "c2"), None)
    found = await store.get(k)
    assert found is not None and found[0].spec.cluster == "c2" and found[1] == revision
    entry = await store.names.bucket.get(k)
    assert entry is not None and entry[0].cluster == "c2"
    # On its own cluster the name is no one else's: the same cluster's creator may go on at once.
    await store.names.bucket.create("tenant.p1.t2", WorkloadName(cluster="c1", at=now))
    assert await store.write("tenant.p1.t2", record("t2", "c1"), None) > 0


async def test_a_write_over_a_live_record_guards_its_own_key_and_no_stale_write_gets_through(bus: Bus) -> None:
    """Actions and results write over a live record on its own cluster with a key-only guard (cheaper for
    nats-server than the family's wildcard); a replica that remembers an older revision is refused all the same,
    and so is one that remembers the live record after its deletion and the name's new life on another cluster."""
    a, b = await desired(bus), await desired(bus)  # two replicas
    k = "tenant.p1.t1"
    live = record("t1", "c1")
    r1 = await a.write(k, live, None)
    slept = msgspec.structs.replace(live, spec=msgspec.structs.replace(live.spec, state="sleeping"), generation=2)
    r2 = await b.write(k, slept, r1, replaces=live)
    with pytest.raises(Conflict):  # a remembers generation 1 at r1: stale
        await a.write(k, msgspec.structs.replace(live, generation=2), r1, replaces=live)
    gone = logic.confirm_deleted(
        msgspec.structs.replace(slept, spec=msgspec.structs.replace(slept.spec, state="deleted")), 1.0
    )
    r3 = await a.write(k, gone, r2, replaces=slept)
    r4 = await a.write(k, record("t1", "c2", generation=3), r3, replaces=gone)  # a tombstone: family-guarded
    with pytest.raises(Conflict):  # b remembers the live record at r2, deleted since, the name now on c2
        await b.write(k, msgspec.structs.replace(slept, generation=3), r2, replaces=slept)
    with pytest.raises(Conflict):  # b remembers the tombstone at r3: a create on c1 now would be a second live one
        await b.write(k, record("t1", "c1", generation=4), r3, replaces=gone)
    assert len({r1, r2, r3, r4}) == 4, "a revision of one bucket is never one of another"
    assert [(r.spec.cluster, r.generation) for r in await a.all_records()] == [("c2", 3)]


async def test_an_inventory_reads_its_own_clusters_records_from_the_kept_ones(bus: Bus) -> None:
    """A cluster's records come from the records lifecycle keeps, by cluster: an inventory (83 a second at
    10,000 agents, 10,000 at once after a restart) costs no bus read and no look at other clusters' records."""
    store = await desired(bus)
    await store.keep()
    mine = [record("t1", "c1"), record("t2", "c1")]
    for r in [*mine, record("t3", "c10"), record("t4", "c2")]:
        await store.write(workload_key(r.spec), r, None)
    t5 = record("t5", "c1")
    gone = logic.confirm_deleted(
        msgspec.structs.replace(t5, spec=msgspec.structs.replace(t5.spec, state="deleted")), 1.0
    )
    await store.write(workload_key(gone.spec), gone, None)  # a tombstone is no live record

    async def read_the_bus(*args: object, **kwargs: object) -> dict[str, WorkloadRecord]:
        raise AssertionError("the bucket was read for one cluster's records")

    for bucket in store.shards.buckets:
        bucket.items = read_the_bus  # type: ignore[method-assign]
    got = await store.cluster_records("c1")
    assert sorted(r.spec.name for r in got) == ["t1", "t2"]
    assert await store.cluster_records("c3") == []
    other = await desired(bus)  # another replica's writes reach the kept records through the bucket's watch
    t6 = record("t6", "c1")
    await other.write(workload_key(t6.spec), t6, None)
    await store.all_records(caught_up=True)
    assert sorted(r.spec.name for r in await store.cluster_records("c1")) == ["t1", "t2", "t6"]
    assert [r.spec.name for r in await store.cluster_records("c2")] == ["t4"]
    with pytest.raises(InvalidInput):
        await store.cluster_records("c1.tenant")


async def test_a_waiting_command_is_never_written_again_as_a_copy(bus: Bus) -> None:
    """Per-cluster order: a record that asks its agent for a generation is only written by the write that
    accepted that generation (``logic.asks``). A same-generation write that asks again over it is refused; one
    that records the generation's own outcome, or asks again over a record that no longer asks (resync), is
    not."""
    store = await desired(bus)
    k = "tenant.p1.t1"
    waiting = record("t1", "c1")
    revision = await store.write(k, waiting, None)
    copy = msgspec.structs.replace(waiting, last_activity=waiting.last_activity + 5)
    with pytest.raises(Internal):
        await store.write(k, copy, revision, replaces=waiting)
    assert (await store.get(k)) == (waiting, revision), "nothing written"
    result = CommandResult(
        op_id=waiting.op_id, cluster="c1", kind="tenant", project="p1", name="t1", generation=1, ok=True
    )
    observed, _ = logic.observe(waiting, result, time.time())
    revision = await store.write(k, observed, revision, replaces=waiting)
    again = logic.resend(observed, time.time(), seen_at=time.time() + 1)
    assert again is not None and logic.asks(again)
    await store.write(k, again, revision, replaces=observed)


async def test_every_record_is_kept_not_read_from_the_bucket_each_time(bus: Bus) -> None:
    """Creates (quota, placement), lists and the auto-sleep timer need every record: they read the records
    kept in the process, which hold this replica's writes as soon as they are acknowledged and another
    replica's within a deadline, instead of a read of the whole bucket each (issue 17: ~500 deliveries per
    create at 1,000 tenants)."""
    a, b = await desired(bus), await desired(bus)  # two replicas
    await a.write("tenant.p1.t1", record("t1", "c1"), None)
    reads = {"whole": 0}

    def counting(bucket: Records[WorkloadRecord]) -> None:
        whole_bucket = bucket.items

        async def counted(timeout: float = 10.0) -> dict[str, WorkloadRecord]:
            reads["whole"] += 1
            return await whole_bucket(timeout)

        bucket.items = counted  # type: ignore[method-assign]

    for bucket in a.shards.buckets:
        counting(bucket)

    def names() -> list[str]:
        return sorted(r.spec.name for r in (a._view.values() if a._view else []))

    assert sorted(r.spec.name for r in await a.all_records()) == ["t1"]
    revision = await a.write("tenant.p1.t2", record("t2", "c1"), None)
    assert sorted(r.spec.name for r in await a.all_records()) == ["t1", "t2"], "its own create, at once"
    await b.write("tenant.p1.t3", record("t3", "c2"), None)
    await wait_for(lambda: names() == ["t1", "t2", "t3"], timeout=5, what="the other replica's create")
    t2 = record("t2", "c1")
    gone = logic.confirm_deleted(
        msgspec.structs.replace(t2, spec=msgspec.structs.replace(t2.spec, state="deleted")), 1.0
    )
    await b.write("tenant.p1.t2", gone, revision, replaces=t2)
    await wait_for(lambda: names() == ["t1", "t3"], timeout=5, what="the other replica's deletion (a tombstone)")
    for _ in range(3):
        await a.all_records()
    assert reads["whole"] == 0, "no read of the whole bucket"
    await a.stop()
    await b.stop()
