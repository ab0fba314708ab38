"""Routes of tenant clusters and spaces: thin calls to lifecycle, which decides everything (defaults for
what a create does not give included: they live in lifecycle's logic only)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import Enum
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request

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
from services.api.audit import ApiCall
from services.api.auth import ERRORS, Platform, Who, authorize, visible


def install_workload_routes(app: FastAPI, platform: Platform) -> None:
    kinds: tuple[tuple[WorkloadKind, str], ...] = (("tenant", "tenants"), ("space", "spaces"))
    for kind, plural in kinds:
        _KindRoutes(platform, kind).install(app, plural)


class _KindRoutes:
    """The routes of one kind (tenant clusters or spaces)."""

    def __init__(self, platform: Platform, kind: WorkloadKind) -> None:
        self.platform = platform
        self.kind = kind

    async def fetch(self, project: str, name: str) -> WorkloadRecord:
        ref = WorkloadRef(kind=self.kind, project=project, name=name)
        return await self.platform.call(subjects.Lifecycle.GET, ref, WorkloadRecord)

    async def create(self, project: str, body: WorkloadIn, who: Who, request: Request) -> WorkloadOut:
        call = ApiCall(request)
        check_name(project, "project name")
        await authorize(self.platform, who, "workload.create", project)
        # Defaults for what is not given live in lifecycle's logic only.
        record = await self.platform.call(
            subjects.Lifecycle.CREATE,
            WorkloadCreate(
                kind=self.kind,
                project=project,
                name=body.name,
                cluster=body.cluster,
                version=body.version,
                sleep_after=body.sleep_after,
                cpu=body.cpu,
                memory=body.memory,
                created_by=who.user,
                op_id=call.op_id,
                call=call.line,
            ),
            WorkloadRecord,
        )
        call.issued(record.op_id)
        return logic.workload_view(record)

    async def list_all(
        self,
        who: Who,
        project: Annotated[str | None, Query(description="Only this project")] = None,
        cluster: Annotated[str | None, Query(description="Only this cluster")] = None,
    ) -> WorkloadListOut:
        if project is not None:
            check_name(project, "project name")
            await authorize(self.platform, who, "workload.read", project)
            query = WorkloadQuery(kind=self.kind, projects=(project,), cluster=cluster or "")
        else:
            seen = await visible(self.platform, who)
            query = WorkloadQuery(kind=self.kind, projects=tuple(seen.projects), all=seen.all, cluster=cluster or "")
        records = await self.platform.call(subjects.Lifecycle.LIST, query, WorkloadList)
        return WorkloadListOut(items=[logic.workload_view(r) for r in records.items])

    async def get_one(self, project: str, name: str, who: Who) -> WorkloadOut:
        check_name(project, "project name")
        await authorize(self.platform, who, "workload.read", project)
        return logic.workload_view(await self.fetch(project, name))

    async def act(
        self, project: str, name: str, action: Action, who: Who, call: ApiCall, version: str = ""
    ) -> WorkloadOut:
        check_name(project, "project name")
        check_name(name, f"{self.kind} name")
        owned_by = ""
        if not who.platform_admin:
            # May they manage their own here? A project admin may manage anyone's; a project user only their own,
            # which lifecycle checks on the record it writes over: no read of it first, and no owner can change in
            # between (lifecycle answers 404 for a missing one all the same).
            decision = await authorize(self.platform, who, "workload.manage", project, owner=who.user)
            owned_by = "" if decision.role == "admin" else who.user
        request = WorkloadAction(
            kind=self.kind,
            project=project,
            name=name,
            action=action,
            version=version,
            by=who.user,
            op_id=call.op_id,
            call=call.line,
            owned_by=owned_by,
        )
        endpoint = subjects.Lifecycle.ACTION_OWN if owned_by else subjects.Lifecycle.ACTION
        record = await self.platform.call(endpoint, request, WorkloadRecord)
        call.issued(record.op_id)
        return logic.workload_view(record)

    async def delete(self, project: str, name: str, who: Who, request: Request) -> WorkloadOut:
        return await self.act(project, name, "delete", who, ApiCall(request))

    async def sleep(self, project: str, name: str, who: Who, request: Request) -> WorkloadOut:
        return await self.act(project, name, "sleep", who, ApiCall(request))

    async def wake(self, project: str, name: str, who: Who, request: Request) -> WorkloadOut:
        return await self.act(project, name, "wake", who, ApiCall(request))

    async def upgrade(self, project: str, name: str, body: UpgradeIn, who: Who, request: Request) -> WorkloadOut:
        return await self.act(project, name, "upgrade", who, ApiCall(request), body.version)

    def install(self, app: FastAPI, plural: str) -> None:
        kind, tags = self.kind, [plural]
        base = f"/api/v1/projects/{{project}}/{plural}"
        routes: list[tuple[str, str, Callable[..., Awaitable[Any]], str, str]] = [
            ("POST", base, self.create, f"create_{kind}", f"Create a {kind}"),
            ("GET", f"/api/v1/{plural}", self.list_all, f"list_{plural}", f"List {plural} the caller may see"),
            ("GET", f"{base}/{{name}}", self.get_one, f"get_{kind}", f"Get a {kind}"),
            ("DELETE", f"{base}/{{name}}", self.delete, f"delete_{kind}", f"Delete a {kind}"),
        ]
        if kind == "tenant":
            for verb, fn in (("sleep", self.sleep), ("wake", self.wake), ("upgrade", self.upgrade)):
                routes.append(
                    ("POST", f"{base}/{{name}}/{verb}", fn, f"{verb}_tenant", f"{verb.capitalize()} a tenant")
                )
        for method, path, endpoint, name, summary in routes:
            app.add_api_route(
                path,
                endpoint,
                methods=[method],
                response_model=WorkloadListOut if endpoint == self.list_all else WorkloadOut,
                status_code=201 if endpoint == self.create else None,
                responses=ERRORS,
                tags=list[str | Enum](tags),
                name=name,
                summary=summary,
            )
