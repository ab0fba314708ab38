"""Which cluster each workload name lives on (KV ``tether-workload-names``), across the desired-state buckets.

A workload's records are in its cluster's bucket (``shards``), so two clusters' records of one name are in
two buckets, and no compare-and-set covers both. The name's entry here does: a write that moves the name to a
cluster (a create, a recreate elsewhere, an orphan's deletion) first moves its entry, compare-and-set on the
entry's revision, and only then writes the record, so two writers placing one name on two clusters cannot
both succeed. Every other write (an action, a result: nearly all) stays on the record's own key and reads
nothing here.

The two writes are not one: a creator that fails between them leaves an entry with no record behind. The
entry names the time it was written, and such a name is free again ``NAME_LEASE`` seconds later; before
that another creator is told it is being created.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from schemas.errors import Conflict
from schemas.messages import WorkloadName, WorkloadRecord, desired_key
from services.bus import Latest, Records
from services.lifecycle import logic
from services.lifecycle.shards import Shards, revision_token

NAME_LEASE = 60.0
"""Seconds a name whose record never arrived stays taken (its creator's requests time out in seconds)."""


@dataclass(frozen=True)
class Home:
    """A name's entry and what its cluster's bucket holds for it now."""

    entry: WorkloadName
    entry_revision: int
    newest: Latest[WorkloadRecord] | None
    """The newest entry of the record's key on that cluster (a deletion marker: ``record`` None)."""

    @property
    def revision(self) -> int:
        """The name's newest revision (``revision_token``): what a write guarded on the name compares with
        (0: none)."""
        return revision_token(self.entry.cluster, self.newest.revision) if self.newest is not None else 0


def may_move(home: Home | None, cluster: str, revision: int | None, now: float) -> str | None:
    """Why a write placing the name on ``cluster`` must not happen (None: it may). ``revision``: the name's
    newest revision the writer read (None: a create, which needs the name free)."""
    if home is None:
        return "written meanwhile" if revision else None
    if revision is not None:
        return None if home.revision == revision else "written meanwhile"
    newest = home.newest
    if newest is not None and newest.record is not None and not logic.is_tombstone(newest.record):
        return "already exists"
    if newest is None and home.entry.cluster != cluster and now - home.entry.at < NAME_LEASE:
        return f"being created on {home.entry.cluster}"
    return None


class Names:
    def __init__(self, bucket: Records[WorkloadName], shards: Shards, clock: Callable[[], float] = time.time) -> None:
        self.bucket = bucket
        self.shards = shards
        self._clock = clock

    async def home(self, k: str) -> Home | None:
        """Where workload ``k`` lives and its newest record there; None for a name never placed."""
        found = await self.bucket.get(k)
        if found is None:
            return None
        entry, revision = found
        newest = await self.shards.of(entry.cluster).latest(desired_key(entry.cluster, k))
        return Home(entry, revision, newest)

    async def move(self, k: str, cluster: str, revision: int | None) -> int:
        """Place workload ``k`` on ``cluster`` if its newest revision is still ``revision`` (a
        ``revision_token``; None: a create, the name free); Conflict otherwise. Returns the sequence in
        ``cluster``'s bucket the record's own key is to be written over (compare-and-set; 0: none)."""
        home = await self.home(k)
        now = self._clock()
        why = may_move(home, cluster, revision, now)
        if why is not None:
            raise Conflict(f"{k!r} {why}")
        if home is None:
            await self.bucket.create(k, WorkloadName(cluster=cluster, at=now))
            own = await self.shards.of(cluster).latest(desired_key(cluster, k))
        elif home.entry.cluster != cluster:
            await self.bucket.update(k, WorkloadName(cluster=cluster, at=now), home.entry_revision)
            own = await self.shards.of(cluster).latest(desired_key(cluster, k))
        else:
            own = home.newest
        return own.revision if own is not None else 0
