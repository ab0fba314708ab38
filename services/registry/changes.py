"""Registry's day-two endpoints: change and remove clusters and projects.

Whether a project or cluster still has tenants or spaces is lifecycle's knowledge: the API asks it before
calling these (and ``project.delete`` refuses a project not marked as deleting while the caller did not
check). A removed cluster's agent stays revoked: its record moves to ``removed.<name>.<time>`` (a key no
cluster name can take), which listings skip and the account's revocation list keeps while the agent's last
credential could still be valid.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from schemas import subjects
from schemas.changes import ClusterUpdate, ProjectUpdate, Removed
from schemas.errors import Conflict, NotFound
from schemas.messages import ClusterRecord, NameRequest, ProjectRecord
from schemas.names import check_name
from services.bus import Endpoints
from services.registry import logic

if TYPE_CHECKING:
    from services.registry.service import Registry

logger = logging.getLogger(__name__)

REMOVED_PREFIX = "removed."


class Changes:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    # --- clusters -----------------------------------------------------------------------------------
    async def cluster_update(self, req: ClusterUpdate) -> ClusterRecord:
        check_name(req.name, "cluster name")

        def change(current: ClusterRecord | None) -> ClusterRecord | None:
            if current is None:
                raise NotFound(f"cluster {req.name!r} not found")
            return logic.update_cluster(current, req)

        updated = await self.registry.clusters.mutate(req.name, change)
        assert updated is not None
        return updated

    async def cluster_remove(self, req: NameRequest) -> Removed:
        record, _ = await self.registry._record(req.name)
        logic.check_removable(record)
        now = time.time()
        took: list[str] = []
        if record.nats_user:
            # Keep the agent revoked while its last credential may still be valid.
            await self.registry.clusters.put(f"{REMOVED_PREFIX}{record.name}.{int(now * 1000)}", record)
            took.append("agent identity (stays revoked)")
        if record.cluster_uid:
            await self.registry.uid_claims.release(record.cluster_uid, record.name, purge=True)
        took += await self.registry.bus.forget_agent_commands(record.name)
        await self.registry.clusters.purge(record.name)
        await self._prune_removed(now)
        await self.registry.account.push()
        await self.registry._event("removed", record.name)
        logger.info("cluster %s removed (%s)", record.name, ", ".join(took) or "nothing else")
        return Removed(kind="cluster", name=record.name, took=tuple(took))

    async def _prune_removed(self, now: float) -> None:
        keep_for = self.registry.settings.agent_credential_ttl + 3600
        for key, record in (await self.registry.clusters.items()).items():
            if key.startswith(REMOVED_PREFIX) and now - record.disconnected_at > keep_for:
                await self.registry.clusters.purge(key)

    # --- projects -----------------------------------------------------------------------------------
    async def project_update(self, req: ProjectUpdate) -> ProjectRecord:
        check_name(req.name, "project name")
        known = set((await self.registry.clusters.items()).keys()) if req.clusters else set()

        def change(current: ProjectRecord | None) -> ProjectRecord | None:
            if current is None:
                raise NotFound(f"project {req.name!r} not found")
            return logic.update_project(current, req, known)

        updated = await self.registry.projects.mutate(req.name, change)
        assert updated is not None
        return updated

    async def project_delete(self, req: NameRequest) -> Removed:
        check_name(req.name, "project name")
        found = await self.registry.projects.get(req.name)
        if found is None:
            raise NotFound(f"project {req.name!r} not found")
        if not found[0].deleting:
            raise Conflict(f"project {req.name!r} is not being deleted (the API checks its tenants and spaces first)")
        await self.registry.projects.purge(req.name)
        return Removed(kind="project", name=req.name)

    def install(self, served: Endpoints) -> None:
        served.platform(subjects.Registry.CLUSTER_UPDATE, ClusterUpdate, self.cluster_update)
        served.platform(subjects.Registry.CLUSTER_REMOVE, NameRequest, self.cluster_remove)
        served.platform(subjects.Projects.UPDATE, ProjectUpdate, self.project_update)
        served.platform(subjects.Projects.DELETE, NameRequest, self.project_delete)


def live(items: dict[str, ClusterRecord]) -> list[ClusterRecord]:
    """Cluster records as listings show them (not the removed agents kept for revocation)."""
    return [r for k, r in items.items() if not k.startswith(REMOVED_PREFIX)]
