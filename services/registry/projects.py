"""Projects' creation and reads (their changes and removal are ``changes``)."""

from __future__ import annotations

import time

from schemas.errors import Conflict, NotFound
from schemas.messages import ClusterRecord, NameRequest, NamesRequest, ProjectCreate, ProjectList, ProjectRecord
from schemas.names import check_name
from services.bus import Records
from services.registry import logic


class Projects:
    def __init__(self, projects: Records[ProjectRecord], clusters: Records[ClusterRecord]) -> None:
        self.projects = projects
        self.clusters = clusters
        """A new project's clusters must be known ones."""

    async def create(self, req: ProjectCreate) -> ProjectRecord:
        check_name(req.name, "project name")
        known = set((await self.clusters.items()).keys()) if req.clusters else set()
        record = logic.new_project(req, known, time.time())
        try:
            await self.projects.create(req.name, record)
        except Conflict:
            raise Conflict(f"project {req.name!r} already exists") from None
        return record

    async def get(self, req: NameRequest) -> ProjectRecord:
        check_name(req.name, "project name")
        found = await self.projects.get(req.name)
        if found is None:
            raise NotFound(f"project {req.name!r} not found")
        return found[0]

    async def list(self, req: NamesRequest) -> ProjectList:
        items = await self.projects.items()
        wanted = items.values() if req.all else (items[n] for n in req.names if n in items)
        return ProjectList(projects=sorted(wanted, key=lambda p: p.name))
