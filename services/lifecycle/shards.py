"""The desired state's buckets (``subjects.DESIRED_BUCKETS``): each cluster's records in the one its name picks.

Each agent's consumer walks its bucket from its last delivery to its next record (nats-server 2.15), so the
fewer other clusters' writes a bucket holds, the cheaper each command is for the server (see
``subjects.DESIRED_SHARDS`` for the figures). A record's key starts with its cluster, so every read and write
of one record goes to one bucket; only the whole view reads them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from schemas import subjects
from schemas.messages import WorkloadRecord
from services.bus import Bus, Keep, Records, View, limits

CAUGHT_UP = 4.0
"""Seconds a read waits for the views to hold every acknowledged write: under the API's call timeout (5 s by
default), so that its caller hears lifecycle's "not caught up" rather than nothing."""


def revision_token(cluster: str, revision: int) -> int:
    """A record's revision as lifecycle hands it out (``Found``): its bucket's sequence and the bucket's number
    in one int (0: none), so that a revision read in one bucket never equals one of another (each bucket
    counts from 1)."""
    return revision * subjects.DESIRED_SHARDS + subjects.desired_shard(cluster) if revision else 0


def bucket_revision(cluster: str, token: int) -> int | None:
    """The sequence in ``cluster``'s bucket that ``token`` stands for (0: none); None when it was read in
    another bucket (so it is no revision of any record there)."""
    revision, shard = divmod(token, subjects.DESIRED_SHARDS)
    if token and shard != subjects.desired_shard(cluster):
        return None
    return revision


class Shards:
    """The desired-state buckets, opened, in ``DESIRED_BUCKETS`` order."""

    def __init__(self, buckets: Sequence[Records[WorkloadRecord]]) -> None:
        if len(buckets) != subjects.DESIRED_SHARDS:
            raise ValueError(f"{len(buckets)} desired-state buckets; {subjects.DESIRED_SHARDS} expected")
        self.buckets = tuple(buckets)

    def of(self, cluster: str) -> Records[WorkloadRecord]:
        """The bucket of ``cluster``'s records."""
        return self.buckets[subjects.desired_shard(cluster)]

    async def view(self, keep: Keep[WorkloadRecord]) -> ShardedView:
        views = await asyncio.gather(*(b.view(keep) for b in self.buckets))
        return ShardedView(views)


class ShardedView:
    """One ``View`` per bucket, read as one: a cluster's records from its bucket's view, all of them from all."""

    def __init__(self, views: Sequence[View[WorkloadRecord]]) -> None:
        self.views = tuple(views)

    def values(self) -> list[WorkloadRecord]:
        return [r for v in self.views for r in v.values()]

    def under(self, cluster: str) -> dict[str, WorkloadRecord]:
        """The live records of ``cluster`` (``View.under``: its key's first token)."""
        return self.views[subjects.desired_shard(cluster)].under(cluster)

    def __len__(self) -> int:
        return sum(len(v) for v in self.views)

    async def caught_up(self, timeout: float = CAUGHT_UP) -> None:
        """Every write acknowledged before the call is in (``View.caught_up``, one request per bucket, at once; a
        view that does not move meanwhile has its consumer made again, ``watching.STALL``)."""
        await asyncio.gather(*(v.caught_up(timeout) for v in self.views))

    async def stop(self) -> None:
        await asyncio.gather(*(v.stop() for v in self.views))


async def open_shards(bus: Bus) -> Shards:
    """Open (or create) every desired-state bucket, at once."""
    buckets = await asyncio.gather(
        *(bus.bucket(b, WorkloadRecord, history=limits.DESIRED_HISTORY) for b in subjects.DESIRED_BUCKETS)
    )
    return Shards(buckets)
