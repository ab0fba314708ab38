"""What lifecycle asks the other services: projects, members and roles (access), clusters (registry) and
their presence (health)."""

from __future__ import annotations

import asyncio

from schemas import subjects
from schemas.errors import NotFound
from schemas.messages import (
    ClusterList,
    ClusterRecord,
    Empty,
    M,
    Membership,
    Message,
    NameRequest,
    Presence,
    PresenceList,
    ProjectRecord,
    Role,
    VisibleProjects,
)
from schemas.names import check_name
from services.bus import Bus

Placement = tuple[dict[str, ClusterRecord], dict[str, Presence]]
"""The clusters placement chooses from, and their presence, by name."""


class Peers:
    def __init__(self, bus: Bus, timeout: float) -> None:
        self.bus = bus
        self.timeout = timeout

    async def _call(self, subject: str, request: Message, reply: type[M]) -> M:
        return await self.bus.call(subject, request, reply, timeout=self.timeout)

    async def project(self, name: str) -> ProjectRecord:
        return await self._call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)

    async def membership(self, project: str) -> Membership:
        return await self._call(subjects.Access.MEMBERS_GET, NameRequest(name=project), Membership)

    async def role_of(self, user: str, project: str) -> Role | None:
        """A user's effective role in a project (through teams too); None for no role or no such user."""
        if not user:
            return None
        try:
            seen = await self._call(subjects.Access.VISIBLE, NameRequest(name=user), VisibleProjects)
        except NotFound:
            return None
        return seen.projects.get(project)

    async def placement_view(self, requested: str) -> Placement:
        """The clusters (and their presence) placement chooses from: only the named one when there is one,
        so a create does not list a fleet of 10,000 clusters twice."""
        if requested:
            return await self._one_cluster(check_name(requested, "cluster name"))
        clusters, presence = await asyncio.gather(
            self._call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList),
            self._call(subjects.Health.PRESENCE_LIST, Empty(), PresenceList),
        )
        return {c.name: c for c in clusters.clusters}, {p.cluster: p for p in presence.items}

    async def _one_cluster(self, name: str) -> Placement:
        found = await asyncio.gather(
            self._call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord),
            self._call(subjects.Health.PRESENCE_GET, NameRequest(name=name), Presence),
            return_exceptions=True,
        )
        for answer in found:
            if isinstance(answer, BaseException) and not isinstance(answer, NotFound):
                raise answer
        record, seen = found
        return (
            {record.name: record} if isinstance(record, ClusterRecord) else {},
            {seen.cluster: seen} if isinstance(seen, Presence) else {},
        )
