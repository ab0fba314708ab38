"""Lifecycle's part in removing a cluster: deletions still waiting for a cluster that is gone for good.

A disconnected cluster never confirms a delete, so its records would stay "Deleting" (and be re-sent at
every start) forever. When the cluster is removed, those records become tombstones as if it had confirmed;
anything not being deleted refuses the removal.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.changes import Removed
from schemas.errors import Conflict
from schemas.messages import NameRequest, workload_key
from schemas.names import check_name
from services.bus import ServiceHost
from services.lifecycle import logic

if TYPE_CHECKING:
    from services.lifecycle.service import Lifecycle

logger = logging.getLogger(__name__)


class Removal:
    def __init__(self, lifecycle: Lifecycle) -> None:
        self.lifecycle = lifecycle

    async def forget_cluster(self, req: NameRequest) -> Removed:
        cluster = check_name(req.name, "cluster name")
        records = [r for r in await self.lifecycle.all_records() if r.spec.cluster == cluster]
        running = [f"{r.spec.kind} {r.spec.project}/{r.spec.name}" for r in records if r.spec.state != "deleted"]
        if running:
            raise Conflict(f"cluster {cluster!r} still holds {', '.join(running[:10])}: delete them first")
        took = []
        for record in records:
            k = workload_key(record.spec)
            found = await self.lifecycle.desired.get(k)
            if found is None or found[0].spec.state != "deleted" or logic.is_tombstone(found[0]):
                continue
            await self.lifecycle.desired.update(k, logic.confirm_deleted(found[0], time.time()), found[1])
            self.lifecycle._known.forget(k)
            await self.lifecycle.announce_deleted(found[0])
            took.append(f"{record.spec.kind} {record.spec.project}/{record.spec.name} (deletion never confirmed)")
        if took:
            logger.info("cluster %s removed: %s", cluster, ", ".join(took))
        return Removed(kind="cluster-workloads", name=cluster, took=tuple(took))

    def install(self, host: ServiceHost) -> None:
        host.endpoint(subjects.Lifecycle.FORGET_CLUSTER, NameRequest, self.forget_cluster)
