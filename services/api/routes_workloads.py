"""Routes of tenant clusters and spaces: thin calls to lifecycle, which decides everything (defaults for
what a create does not give included: they live in lifecycle's logic only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Query

from schemas import subjects
from schemas.api import UpgradeIn, WorkloadIn, WorkloadListOut, WorkloadOut
from schemas.messages import (
    Action,
    WorkloadAction,
    WorkloadCreate,
    WorkloadKind,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
    WorkloadRef,
)
from schemas.names import check_name
from services.api import logic
from services.api.auth import ERRORS, Platform, Who, authorize, visible


def install_workload_routes(app: FastAPI, platform: Platform) -> None:
    kinds: tuple[tuple[WorkloadKind, str], ...] = (("tenant", "tenants"), ("space", "spaces"))
    for kind, plural in kinds:
        _install_kind(app, platform, kind, plural)


def _install_kind(app: FastAPI, platform: Platform, kind: WorkloadKind, plural: str) -> None:
    tags: list[str | Enum] = [plural]

    async def fetch(project: str, name: str) -> WorkloadRecord:
        return await platform.call(
            subjects.Lifecycle.GET, WorkloadRef(kind=kind, project=project, name=name), WorkloadRecord
        )

    async def create(project: str, body: WorkloadIn, who: Who) -> WorkloadOut:
        check_name(project, "project name")
        await authorize(platform, who, "workload.create", project)
        # Defaults for what is not given live in lifecycle's logic only.
        record = await platform.call(
            subjects.Lifecycle.CREATE,
            WorkloadCreate(
                kind=kind,
                project=project,
                name=body.name,
                cluster=body.cluster,
                version=body.version,
                sleep_after=body.sleep_after,
                cpu=body.cpu,
                memory=body.memory,
                created_by=who.user,
            ),
            WorkloadRecord,
        )
        return logic.workload_view(record)

    async def list_all(
        who: Who,
        project: Annotated[str | None, Query(description="Only this project")] = None,
        cluster: Annotated[str | None, Query(description="Only this cluster")] = None,
    ) -> WorkloadListOut:
        if project is not None:
            check_name(project, "project name")
            await authorize(platform, who, "workload.read", project)
            query = WorkloadQuery(kind=kind, projects=(project,), cluster=cluster or "")
        else:
            seen = await visible(platform, who)
            query = WorkloadQuery(kind=kind, projects=tuple(seen.projects), all=seen.all, cluster=cluster or "")
        records = await platform.call(subjects.Lifecycle.LIST, query, WorkloadList)
        return WorkloadListOut(items=[logic.workload_view(r) for r in records.items])

    async def get_one(project: str, name: str, who: Who) -> WorkloadOut:
        check_name(project, "project name")
        await authorize(platform, who, "workload.read", project)
        return logic.workload_view(await fetch(project, name))

    async def act(project: str, name: str, action: Action, who: Who, version: str = "") -> WorkloadOut:
        check_name(project, "project name")
        check_name(name, f"{kind} name")
        if not who.platform_admin:
            # Whether a project user may manage it depends on who owns it. A platform admin may manage
            # anything: no read of the record first (lifecycle answers 404 for a missing one all the same).
            await authorize(platform, who, "workload.read", project)
            current = await fetch(project, name)
            await authorize(platform, who, "workload.manage", project, owner=current.created_by)
        record = await platform.call(
            subjects.Lifecycle.ACTION,
            WorkloadAction(
                kind=kind,
                project=project,
                name=name,
                action=action,
                version=version,
                by=who.user,
            ),
            WorkloadRecord,
        )
        return logic.workload_view(record)

    async def delete(project: str, name: str, who: Who) -> WorkloadOut:
        return await act(project, name, "delete", who)

    def route(
        method: str, path: str, endpoint: Callable[..., Awaitable[Any]], name: str, summary: str, **kw: Any
    ) -> None:
        kw.setdefault("response_model", WorkloadOut)
        app.add_api_route(
            path, endpoint, methods=[method], responses=ERRORS, tags=tags, name=name, summary=summary, **kw
        )

    base = f"/api/v1/projects/{{project}}/{plural}"
    route("POST", base, create, f"create_{kind}", f"Create a {kind}", status_code=201)
    route(
        "GET",
        f"/api/v1/{plural}",
        list_all,
        f"list_{plural}",
        f"List {plural} the caller may see",
        response_model=WorkloadListOut,
    )
    route("GET", f"{base}/{{name}}", get_one, f"get_{kind}", f"Get a {kind}")
    route("DELETE", f"{base}/{{name}}", delete, f"delete_{kind}", f"Delete a {kind}")
    if kind == "tenant":

        async def sleep(project: str, name: str, who: Who) -> WorkloadOut:
            return await act(project, name, "sleep", who)

        async def wake(project: str, name: str, who: Who) -> WorkloadOut:
            return await act(project, name, "wake", who)

        async def upgrade(project: str, name: str, body: UpgradeIn, who: Who) -> WorkloadOut:
            return await act(project, name, "upgrade", who, body.version)

        for verb, fn in (("sleep", sleep), ("wake", wake), ("upgrade", upgrade)):
            route("POST", f"{base}/{{name}}/{verb}", fn, f"{verb}_tenant", f"{verb.capitalize()} a tenant")
