"""Lifecycle's part in removing a cluster: deletions still waiting for a cluster that is gone for good.

A disconnected cluster never confirms a delete, so its records would stay "Deleting" (and be re-sent at
every start) forever. When the cluster is removed, those records become tombstones as if it had confirmed;
anything not being deleted refuses the removal.
"""

from __future__ import annotations

import logging
import time

from schemas.changes import Removed
from schemas.errors import Conflict
from schemas.messages import NameRequest, ref_of, workload_key
from schemas.names import check_name
from services.lifecycle import logic
from services.lifecycle.sending import Sender
from services.lifecycle.store import Desired

logger = logging.getLogger(__name__)


class Removal:
    def __init__(self, desired: Desired, sender: Sender) -> None:
        self.desired = desired
        self.sender = sender

    async def forget_cluster(self, req: NameRequest) -> Removed:
        cluster = check_name(req.name, "cluster name")
        records = [r for r in await self.desired.all_records(caught_up=True) if r.spec.cluster == cluster]
        running = [str(ref_of(r.spec)) for r in records if r.spec.state != "deleted"]
        if running:
            raise Conflict(f"cluster {cluster!r} still holds {', '.join(running[:10])}: delete them first")
        took = []
        for record in records:
            k = workload_key(record.spec)
            found = await self.desired.get(k)
            if found is None or found[0].spec.state != "deleted" or logic.is_tombstone(found[0]):
                continue
            await self.desired.write(k, logic.confirm_deleted(found[0], time.time()), found[1])
            await self.sender.announce_deleted(found[0])
            took.append(f"{ref_of(record.spec)} (deletion never confirmed)")
        if took:
            logger.info("cluster %s removed: %s", cluster, ", ".join(took))
        return Removed(kind="cluster-workloads", name=cluster, took=tuple(took))
