"""The desired state (``DESIRED_BUCKETS``, one per group of clusters) as lifecycle reads and writes it.

Every write is a compare-and-set on the revision read (or remembered); the records this replica wrote
last are remembered with their revision, so the next write on one of them needs no read first.

A record is stored under ``<cluster>.<kind>.<project>.<name>`` (``desired_key``) in its cluster's bucket
(``shards``), so that one cluster's records are one subject filter of one bucket. Lifecycle names a workload
by ``<kind>.<project>.<name>`` (``k``, the ``workload_key``); which cluster it lives on is its entry in the
names' bucket (``names``), and its record is the newest entry of its key there.

A write on top of a live record on the same cluster (an action, a result: nearly every write) guards only its
own key: one request. A write that places the name on a cluster (a create, a recreate elsewhere, an orphan's
deletion, a confirmation) first moves the name's entry, compare-and-set (``Names.move``): a name recreated on
another cluster, or two replicas placing the same new name on two clusters, can never leave two live records.
That is the same condition for the key-only writes: a live record stops being the name's newest only through
a write on its own key (its deletion, or a marker left by hand), and the name moves only while its newest
record is no live one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from schemas.errors import Conflict, Internal, InvalidInput, NotFound
from schemas.messages import WorkloadName, WorkloadRecord, WorkloadRef, desired_key, workload_key
from schemas.names import dns1123_label_error
from services.bus import Records
from services.lifecycle import logic
from services.lifecycle.concurrency import KeyedLocks, Recent
from services.lifecycle.names import Names
from services.lifecycle.shards import ShardedView, Shards, bucket_revision, revision_token

KNOWN_RECORDS = 20_000
"""Records this replica wrote last, remembered with their revision (about 1 KB each): the next action or
result on one of them writes on top of it (compare-and-set) without reading it first."""

Found = tuple[WorkloadRecord, int]
"""A record and its revision (``revision_token``: which bucket, and where in it)."""

logger = logging.getLogger(__name__)


def _stored_where_it_belongs(key: str, record: WorkloadRecord) -> bool:
    """A live record under the key its spec names (a tombstone, or a copy under another key, is no record)."""
    return not logic.is_tombstone(record) and key == desired_key(record.spec.cluster, workload_key(record.spec))


class Desired:
    def __init__(self, shards: Shards, names: Records[WorkloadName]) -> None:
        self.shards = shards
        self.names = Names(names, shards)
        self.known: Recent[Found] = Recent(KNOWN_RECORDS)
        self.writes = asyncio.Lock()
        """One writer at a time per replica where quota and placement are checked (creates, upgrades)."""
        self.objects = KeyedLocks()
        """One action at a time per object."""
        self._view: ShardedView | None = None
        self._viewing = asyncio.Lock()

    async def keep(self) -> ShardedView:
        """The buckets' live records kept in this process (``Records.view``), made at the first call.

        ``all_records`` reads them there: every create (quota, placement), upgrade, list, the auto-sleep
        check and a membership change need every record, and a read of the whole bucket for each delivered
        every record to lifecycle again (1,000 creates: ~500,000 deliveries, each leaving nats-server a reply
        permission to track for 60 s: 28 % of its heap at 1,000 agents, measured). This replica's own writes
        are in it when acknowledged (a quota check right after a create counts it); another replica's arrive
        through the watch within milliseconds, as before they could land between a read and a write (the
        writers' lock is per replica; the create-only write settles a race on one name)."""
        async with self._viewing:
            if self._view is None:
                self._view = await self.shards.view(_stored_where_it_belongs)
            return self._view

    async def stop(self) -> None:
        view, self._view = self._view, None
        if view is not None:
            await view.stop()

    async def all_records(self, *, caught_up: bool = False) -> list[WorkloadRecord]:
        """Every live record (tombstones of deleted objects left out), each stored where its spec says.
        ``caught_up``: with every write acknowledged before the call, another replica's too (``View.caught_up``:
        one request), for a user's read right after a change another replica made (a list after a create)."""
        view = self._view or await self.keep()
        if caught_up:
            await view.caught_up()
        return view.values()

    async def cluster_records(self, cluster: str) -> list[WorkloadRecord]:
        """Every live record of ``cluster`` (tombstones left out), from the kept records' index by cluster.

        An inventory needs only its own cluster's records, and 10,000 agents report every 2 minutes and all at
        once after a restart. A read of that cluster's keys on the bus per inventory (one batched direct get)
        made those 10,000 requests to a server busy with the reconnects: the inventories of a 10,000-agent
        restart were reconciled 102-123 s after NATS started, 70 s with this (benchmark phase 5). The resync
        needs no more than a snapshot: every re-send, deletion and confirmation reads the record again before
        it writes."""
        if dns1123_label_error(cluster):
            raise InvalidInput(f"no cluster is named {cluster!r}")
        view = self._view or await self.keep()
        return list(view.under(cluster).values())

    async def get(self, k: str) -> Found | None:
        """Workload ``k``'s record (on whichever cluster its name lives) and its revision, or None. Two reads:
        the name's entry, then the record's key in that cluster's bucket."""
        home = await self.names.home(k)
        if home is None or home.newest is None or home.newest.record is None:
            return None
        return home.newest.record, home.revision

    async def get_live(self, ref: WorkloadRef) -> Found:
        """The record of ``ref``; NotFound when there is none or only its tombstone."""
        found = await self.get(workload_key(ref))
        if found is None or logic.is_tombstone(found[0]):
            raise NotFound(f"{ref.kind} {ref.name!r} not found in project {ref.project!r}")
        return found

    async def write(
        self, k: str, record: WorkloadRecord, revision: int | None, *, replaces: WorkloadRecord | None = None
    ) -> int:
        """Create (``revision`` None) or compare-and-set ``record`` (under its cluster's key) and remember it;
        Conflict when someone wrote workload ``k`` meanwhile, on any cluster (then it is forgotten: the next
        write reads first). ``replaces``: the record at ``revision``, when the caller has it; a live one on
        ``record``'s cluster lets the write guard its own key only (see the module's note); one that still asks
        its cluster for its generation is not written again at that generation while the new one asks too
        (Internal: ``logic.asks``)."""
        if (
            replaces is not None
            and replaces.generation == record.generation
            and logic.asks(replaces)
            and logic.asks(record)
        ):
            # A copy of a waiting command at a later position of the stream: per-cluster order (logic.asks).
            raise Internal(f"{k!r}: generation {record.generation} still waits for its cluster; not written again")
        cluster = record.spec.cluster
        key, bucket = desired_key(cluster, k), self.shards.of(cluster)
        same_key = (
            revision is not None
            and replaces is not None
            and not logic.is_tombstone(replaces)
            and replaces.spec.cluster == cluster
        )
        try:
            if same_key:
                over = bucket_revision(cluster, revision or 0)
                if over is None:
                    raise Conflict(f"{k!r} was written meanwhile")  # read on another cluster: stale
            else:
                over = await self.names.move(k, cluster, revision)
            written = revision_token(cluster, await bucket.write_over(key, record, key, over))
        except Exception:
            self.known.forget(k)
            raise
        self.known.put(k, (record, written))
        return written

    async def mutate(
        self, k: str, change: Callable[[WorkloadRecord], WorkloadRecord | None], attempts: int = 20
    ) -> WorkloadRecord | None:
        """Read-modify-write of an existing record, retried on a concurrent change; None when there is none
        (or ``change`` returns None: nothing to write)."""
        for _ in range(attempts):
            found = await self.get(k)
            new = change(found[0]) if found is not None else None
            if found is None or new is None:
                return None
            try:
                await self.write(k, new, found[1])
            except Conflict:
                continue
            return new
        raise Internal(f"gave up updating {k!r} after {attempts} concurrent changes")
