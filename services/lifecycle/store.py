"""The desired state (KV ``tether-desired``) as lifecycle reads and writes it.

Every write is a compare-and-set on the revision read (or remembered); the records this replica wrote
last are remembered with their revision, so the next write on one of them needs no read first.
"""

from __future__ import annotations

import asyncio
import time

from schemas.errors import NotFound
from schemas.messages import WorkloadRecord, WorkloadRef, workload_key
from services.bus import Records
from services.lifecycle import logic
from services.lifecycle.concurrency import KeyedLocks, Recent

KNOWN_RECORDS = 20_000
"""Records this replica wrote last, remembered with their revision (about 1 KB each): the next action or
result on one of them writes on top of it (compare-and-set) without reading it first."""

INVENTORY_SNAPSHOT_TTL = 1.0
"""Seconds one scan of the desired state serves inventories (10,000 agents report every 2 minutes)."""

Found = tuple[WorkloadRecord, int]
"""A record and its revision."""


class Desired:
    def __init__(self, bucket: Records[WorkloadRecord]) -> None:
        self.bucket = bucket
        self.known: Recent[Found] = Recent(KNOWN_RECORDS)
        self.writes = asyncio.Lock()
        """One writer at a time per replica where quota and placement are checked (creates, upgrades)."""
        self.objects = KeyedLocks()
        """One action at a time per object."""
        self._snapshot: tuple[float, list[WorkloadRecord]] | None = None

    async def all_records(self) -> list[WorkloadRecord]:
        """Every live record (tombstones of deleted objects left out)."""
        return [r for r in (await self.bucket.items()).values() if not logic.is_tombstone(r)]

    async def recent_records(self) -> list[WorkloadRecord]:
        """``all_records()``, shared by the inventories of the next ``INVENTORY_SNAPSHOT_TTL`` seconds.

        One bucket scan per inventory made resync cost O(clusters x records). What a slightly old snapshot
        could get wrong is checked against the record itself before anything is sent.
        """
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] > INVENTORY_SNAPSHOT_TTL:
            self._snapshot = (now, await self.all_records())
        return self._snapshot[1]

    async def get(self, key: str) -> Found | None:
        return await self.bucket.get(key)

    async def get_live(self, ref: WorkloadRef) -> Found:
        """The record of ``ref``; NotFound when there is none or only its tombstone."""
        found = await self.bucket.get(workload_key(ref))
        if found is None or logic.is_tombstone(found[0]):
            raise NotFound(f"{ref.kind} {ref.name!r} not found in project {ref.project!r}")
        return found

    async def write(self, key: str, record: WorkloadRecord, revision: int | None) -> int:
        """Create (``revision`` None) or compare-and-set ``record`` and remember it; Conflict when someone
        wrote it meanwhile (then it is forgotten: the next write reads first)."""
        try:
            if revision is None:
                written = await self.bucket.create(key, record)
            else:
                written = await self.bucket.update(key, record, revision)
        except Exception:
            self.known.forget(key)
            raise
        self.known.put(key, (record, written))
        return written
