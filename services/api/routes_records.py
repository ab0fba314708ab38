"""Routes that change or remove projects and clusters (platform admins only).

A project with tenants or spaces is deleted only with ``cascade``: it is marked as deleting (nothing new is
created in it), each of its tenants and spaces is deleted through lifecycle like any other deletion, and the
call answers 202 with what remains; calling it again reports progress and, once nothing remains, deletes
the project and its members. A cluster is removed only when disconnected (or never connected) and when
nothing is placed on it.
"""

# No "from __future__ import annotations": FastAPI resolves the routes' local annotations at definition.
import asyncio
from typing import Annotated

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from schemas import subjects
from schemas.api import ClusterOut, ProjectOut
from schemas.api_changes import ClusterPatchIn, ProjectDeletionOut, ProjectPatchIn, RemovedOut
from schemas.changes import ClusterUpdate, ProjectUpdate, Removed
from schemas.errors import Conflict
from schemas.messages import (
    ClusterRecord,
    Membership,
    NameRequest,
    ProjectRecord,
    Quota,
    WorkloadAction,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
    ref_of,
)
from schemas.names import check_name
from services.api import logic
from services.api.auth import ERRORS, Change, Platform, Who, require_admin


def label(r: WorkloadRecord) -> str:
    return f"{r.spec.kind} {r.spec.name}"


def _listing(names: list[str], limit: int = 10) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


async def workloads(platform: "Platform", *, project: str = "", cluster: str = "") -> list[WorkloadRecord]:
    """Live tenants and spaces of one project or on one cluster."""
    out: list[WorkloadRecord] = []
    for kind in ("tenant", "space"):
        query = WorkloadQuery(kind=kind, projects=(project,) if project else (), all=not project, cluster=cluster)
        out += (await platform.call(subjects.Lifecycle.LIST, query, WorkloadList)).items
    return out


def install_record_routes(app: FastAPI, platform: "Platform") -> None:
    install_project_routes(app, platform)
    install_cluster_routes(app, platform)


def install_project_routes(app: FastAPI, platform: "Platform") -> None:
    async def project_out(name: str) -> ProjectOut:
        project, membership, records = await asyncio.gather(
            platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord),
            platform.call(subjects.Access.MEMBERS_GET, NameRequest(name=name), Membership),
            workloads(platform, project=name),
        )
        return logic.project_view(project, membership, records, None)

    @app.patch("/api/v1/projects/{name}", response_model=ProjectOut, responses=ERRORS, tags=["projects"])
    async def update_project(name: str, body: ProjectPatchIn, who: Who) -> ProjectOut:
        """Change the quota, the allowed clusters, the selector or the display name (what is given)."""
        require_admin(who)
        check_name(name, "project name")
        q = body.quota
        await platform.call(
            subjects.Projects.UPDATE,
            ProjectUpdate(
                name=name,
                display_name=body.display_name,
                clusters=tuple(body.clusters) if body.clusters is not None else None,
                cluster_selector=body.cluster_selector,
                quota=Quota(tenants=q.tenants, spaces=q.spaces, cpu=q.cpu, memory=q.memory) if q else None,
            ),
            ProjectRecord,
        )
        return await project_out(name)

    @app.delete(
        "/api/v1/projects/{name}",
        response_model=ProjectDeletionOut,
        responses=ERRORS | {202: {"model": ProjectDeletionOut, "description": "Tenants and spaces being deleted"}},
        tags=["projects"],
    )
    async def delete_project(
        name: str,
        who: Who,
        cascade: Annotated[bool, Query(description="Also delete its tenants and spaces (else 409 while any)")] = False,
    ) -> JSONResponse:
        require_admin(who)
        check_name(name, "project name")
        project = await platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)
        live = await workloads(platform, project=name)
        if live and not cascade and not project.deleting:
            raise Conflict(
                f"project {name!r} still has {_listing([label(r) for r in live])}: "
                "delete them first, or delete the project with --cascade (deletes them too)"
            )
        if not project.deleting:
            await platform.call(subjects.Projects.UPDATE, ProjectUpdate(name=name, deleting=True), ProjectRecord)
            live = await workloads(platform, project=name)  # a create that raced the mark is in this list
        for r in live:
            if r.spec.state != "deleted":
                action = WorkloadAction(kind=r.spec.kind, project=name, name=r.spec.name, action="delete", by=who.user)
                await platform.call(subjects.Lifecycle.ACTION, action, WorkloadRecord)
        if live:
            body = ProjectDeletionOut(deleted=False, remaining=[label(r) for r in live])
            return JSONResponse(status_code=202, content=body.model_dump())
        members = await platform.call(subjects.Access.MEMBERS_DELETE, NameRequest(name=name), Removed)
        await platform.call(subjects.Projects.DELETE, NameRequest(name=name), Removed)
        await platform.end_sessions(Change(project=name))
        took = [f"member {m}" for m in members.took]
        return JSONResponse(status_code=200, content=ProjectDeletionOut(deleted=True, took=took).model_dump())


def install_cluster_routes(app: FastAPI, platform: "Platform") -> None:
    @app.patch("/api/v1/clusters/{name}", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def update_cluster(name: str, body: ClusterPatchIn, who: Who) -> ClusterOut:
        """Change the display name, the description or the labels (what is given; labels replace all)."""
        require_admin(who)
        check_name(name, "cluster name")
        change = ClusterUpdate(
            name=name, display_name=body.display_name, description=body.description, labels=body.labels
        )
        record = await platform.call(subjects.Registry.CLUSTER_UPDATE, change, ClusterRecord)
        return logic.cluster_view(record, await platform.presence(name))

    @app.delete("/api/v1/clusters/{name}", response_model=RemovedOut, responses=ERRORS, tags=["clusters"])
    async def remove_cluster(name: str, who: Who) -> RemovedOut:
        """Remove a disconnected (or never connected) cluster with nothing placed on it."""
        require_admin(who)
        check_name(name, "cluster name")
        record = await platform.call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord)
        if record.state == "connected":
            raise Conflict(f"cluster {name!r} is connected; disconnect it first ('tether cluster disconnect {name}')")
        placed = [r for r in await workloads(platform, cluster=name) if r.spec.state != "deleted"]
        if placed:
            names = [str(ref_of(r.spec)) for r in placed]
            raise Conflict(f"cluster {name!r} still holds {_listing(names)}: delete them first")
        # Deletions it will never confirm end with it; then the registry forgets the cluster.
        forgotten = await platform.call(subjects.Lifecycle.FORGET_CLUSTER, NameRequest(name=name), Removed)
        removed = await platform.call(subjects.Registry.CLUSTER_REMOVE, NameRequest(name=name), Removed)
        return RemovedOut(kind="cluster", name=name, took=list(forgotten.took) + list(removed.took))
