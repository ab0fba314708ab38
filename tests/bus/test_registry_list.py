"""The registry's cluster list, which every create that names no cluster asks for (placement): read from the
cluster records kept in the process, not from the whole bucket each time, and still holding every write
acknowledged before it, another replica's too."""

from __future__ import annotations

from schemas import subjects
from schemas.messages import ClusterRecord, Empty
from services.bus import Bus
from services.registry.changes import REMOVED_PREFIX
from services.registry.service import Registry, Settings


async def test_the_list_reads_the_kept_records_and_sees_another_replicas_write(bus: Bus) -> None:
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord, history=5)
    uids = await bus.bucket(subjects.BUCKET_CLUSTER_UIDS, ClusterRecord, history=1)
    projects = await bus.bucket(subjects.BUCKET_PROJECTS, ClusterRecord, history=5)
    registry = Registry(Settings(), bus, clusters, uids, projects)  # type: ignore[arg-type]
    await clusters.create("c1", ClusterRecord(name="c1"))
    registry.kept = await clusters.view(lambda key, _record: not key.startswith(REMOVED_PREFIX))
    reads = {"whole": 0}
    whole_bucket = clusters.items

    async def counted(timeout: float = 10.0) -> dict[str, ClusterRecord]:
        reads["whole"] += 1
        return await whole_bucket(timeout)

    clusters.items = counted  # type: ignore[method-assign]
    # Another replica's writes, through its own handle on the bucket: this one's view learns of them only by
    # its watch, and the list waits for the writes acknowledged before it.
    other = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord, history=5)
    await other.create("c2", ClusterRecord(name="c2"))
    await other.create(f"{REMOVED_PREFIX}c0", ClusterRecord(name="c0"))
    assert [c.name for c in (await registry.list(Empty())).clusters] == ["c1", "c2"]
    await other.delete("c1")
    assert [c.name for c in (await registry.list(Empty())).clusters] == ["c2"]
    assert reads["whole"] == 0, "no read of the whole bucket"
    await registry.kept.stop()
