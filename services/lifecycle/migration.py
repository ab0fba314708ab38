"""Moving the desired state of earlier versions (one bucket, ``RETIRED_DESIRED_BUCKET``) into its buckets.

Each record goes to its cluster's bucket under ``desired_key`` (records of the key form before the cluster
came first, ``<kind>.<project>.<name>``, too), and each name gets its entry (``names``), on the cluster of its
live record (else of its newest tombstone there). Then the old bucket is deleted, with the agents' consumers
on it: the registry makes each agent its consumer on its cluster's bucket at its next hello, which starts
from the last record of each object (a full resync: nothing not yet applied is missed).

Idempotent, and safe with two replicas starting at once: every write is create-only (a replica that finds it
written, by the other, goes on), and the old bucket is deleted only after everything in it was moved.
"""

from __future__ import annotations

import logging

from schemas import subjects
from schemas.errors import Conflict, InvalidInput
from schemas.messages import WorkloadName, WorkloadRecord, desired_key, workload_key
from services.bus import Bus, Records
from services.lifecycle import logic
from services.lifecycle.shards import Shards

logger = logging.getLogger(__name__)


def _placed(key: str, record: WorkloadRecord) -> tuple[str, str] | None:
    """(``k``, its new key) of a record stored under ``key`` in the old bucket; None for one that is not where
    its own spec says (left behind, with a warning)."""
    try:
        k = workload_key(record.spec)
        new_key = desired_key(record.spec.cluster, k)
    except InvalidInput as exc:
        logger.warning("desired state: left %r behind: %s", key, exc.description)
        return None
    if key not in (k, new_key):
        logger.warning("desired state: left %r behind: it holds %s", key, new_key)
        return None
    return k, new_key


async def move_records(old: Records[WorkloadRecord], shards: Shards, names: Records[WorkloadName]) -> int:
    """Copy every record of ``old`` into ``shards`` and give each name its entry; how many records this
    replica wrote."""
    records = await old.items()
    homes: dict[str, str] = {}
    moved = 0
    for key, record in records.items():
        placed = _placed(key, record)
        if placed is None:
            continue
        k, new_key = placed
        if key == k and new_key in records:
            continue  # both forms: the cluster-first one is the newer (earlier versions moved records to it)
        try:
            await shards.of(record.spec.cluster).write_over(new_key, record, new_key, 0)
            moved += 1
        except Conflict:
            pass  # moved already (by another replica)
        if k not in homes or not logic.is_tombstone(record):
            homes[k] = record.spec.cluster
    for k, cluster in homes.items():
        if await names.get(k) is None:
            try:
                await names.create(k, WorkloadName(cluster=cluster, at=0.0))
            except Conflict:
                pass  # given by another replica
    return moved


async def move_retired(bus: Bus, shards: Shards, names: Records[WorkloadName]) -> int:
    """Move the old bucket's records if it is still there, then delete it; how many records were moved."""
    old = await bus.retired_bucket(subjects.RETIRED_DESIRED_BUCKET, WorkloadRecord)
    if old is None:
        return 0
    moved = await move_records(old, shards, names)
    await bus.delete_bucket(subjects.RETIRED_DESIRED_BUCKET)
    logger.warning("desired state: moved %d records into %d buckets", moved, subjects.DESIRED_SHARDS)
    return moved
