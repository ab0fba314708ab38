"""The FastAPI application: routes are thin; every decision is made by a service over the bus."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException

from schemas import subjects, versions
from schemas.api import (
    ClusterConnectIn,
    ClusterConnectOut,
    ClusterListOut,
    ClusterOut,
    ErrorResponse,
    HealthzOut,
    MemberIn,
    ProjectIn,
    ProjectListOut,
    ProjectOut,
    TeamIn,
    TeamListOut,
    TeamMemberIn,
    TeamOut,
    UpgradeIn,
    UserCreatedOut,
    UserIn,
    UserListOut,
    VersionsOut,
    WhoAmIOut,
    WorkloadIn,
    WorkloadListOut,
    WorkloadOut,
)
from schemas.errors import Forbidden, NotFound, TetherError, Unauthenticated
from schemas.messages import (
    AccessAction,
    Action,
    Authenticate,
    Authorize,
    ClusterConnectInfo,
    ClusterCreate,
    ClusterList,
    ClusterRecord,
    Decision,
    Empty,
    M,
    MemberChange,
    Membership,
    Message,
    NameRequest,
    NamesRequest,
    Presence,
    PresenceList,
    Principal,
    ProjectCreate,
    ProjectList,
    ProjectRecord,
    Quota,
    TeamCreate,
    TeamList,
    TeamMemberAdd,
    TeamRecord,
    UserCreate,
    UserCreated,
    UserList,
    VisibleProjects,
    WorkloadAction,
    WorkloadCreate,
    WorkloadKind,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
    WorkloadRef,
)
from schemas.names import check_name
from services.api import logic, manifests
from services.bus import Connection, Telemetry, call
from services.bus.endpoints import ping

logger = logging.getLogger(__name__)

SERVICES = ("registry", "access", "lifecycle", "health")
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 410, 413, 503)
}


@dataclass
class Platform:
    """What the routes reach: the bus, and where agents connect."""

    nc: Connection
    nats_url: str
    request_timeout: float = 5.0
    auth_cache_ttl: float = 5.0
    telemetry: Telemetry | None = None
    ca_file: str = ""
    """The CA agents verify a TLS NATS server with (printed in their command)."""

    def __post_init__(self) -> None:
        self._auth_cache: dict[str, tuple[float, Principal]] = {}

    async def call(self, subject: str, message: Message, reply_type: type[M]) -> M:
        return await call(self.nc, subject, message, reply_type, timeout=self.request_timeout)

    def forget_sessions(self) -> None:
        """After a token, a user or a role goes away: no cached answer may outlive it here."""
        self._auth_cache.clear()

    async def authenticate(self, token: str) -> Principal:
        now = time.monotonic()
        hit = self._auth_cache.get(token)
        if hit and hit[0] > now:
            return hit[1]
        principal = await self.call(subjects.Access.AUTHENTICATE, Authenticate(token=token), Principal)
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[token] = (now + self.auth_cache_ttl, principal)
        return principal


bearer = HTTPBearer(auto_error=False)


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


async def principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Principal:
    if creds is None or not creds.credentials:
        raise Unauthenticated("missing API token: send 'Authorization: Bearer <token>'")
    who = await platform_of(request).authenticate(creds.credentials)
    request.state.user = who.user  # for the audit trail
    return who


Who = Annotated[Principal, Depends(principal)]


def require_admin(who: Principal) -> None:
    if not who.platform_admin:
        raise Forbidden(f"user {who.user!r} is not a platform admin")


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        title="Tether API",
        version="1",
        description="Run many Kubernetes clusters as one. Every call needs `Authorization: Bearer <token>`.",
    )
    app.state.platform = platform

    @app.exception_handler(TetherError)
    async def tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        status = logic.http_status(exc)
        if status >= 500:
            logger.error("request failed: %s", exc.description)
        return JSONResponse(status_code=status, content={"error": {"code": exc.code, "message": exc.description}})

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        # Framework errors (unparsable body, unknown route, wrong method) in the documented error shape.
        body = {"error": {"code": str(exc.status_code), "message": str(exc.detail)}}
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()) if p != 'body')}: {err.get('msg')}" for err in exc.errors()
        )
        return JSONResponse(status_code=400, content={"error": {"code": "400", "message": problems}})

    @app.get("/healthz", response_model=HealthzOut, tags=["platform"])
    async def healthz() -> JSONResponse:
        results = await asyncio.gather(*(ping(platform.nc, s) for s in SERVICES))
        services = dict(zip(SERVICES, results, strict=True))
        ok = platform.nc.is_connected and all(results)
        body = HealthzOut(status="ok" if ok else "starting", services=services)
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())

    @app.get("/api/v1/versions", response_model=VersionsOut, responses=ERRORS, tags=["tenants"])
    async def tenant_versions(who: Who) -> VersionsOut:
        """The Kubernetes versions a tenant cluster may run (create and upgrade are checked against them)."""
        return VersionsOut(
            versions=versions.supported_versions(),
            default=versions.DEFAULT_VERSION,
            upgrade=versions.UPGRADE_RULE,
            engine=versions.TENANT_ENGINE,
        )

    @app.get("/api/v1/whoami", response_model=WhoAmIOut, responses=ERRORS, tags=["access"])
    async def whoami(who: Who) -> WhoAmIOut:
        return WhoAmIOut(user=who.user, platform_admin=who.platform_admin)

    async def presence_of(name: str) -> Presence | None:
        try:
            return await platform.call(subjects.Health.PRESENCE_GET, NameRequest(name=name), Presence)
        except TetherError as exc:
            if exc.code == "404":
                return None
            raise

    @app.get("/api/v1/clusters", response_model=ClusterListOut, responses=ERRORS, tags=["clusters"])
    async def list_clusters(who: Who) -> ClusterListOut:
        records, presence, scope = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList),
            platform.call(subjects.Health.PRESENCE_LIST, Empty(), PresenceList),
            cluster_scope(platform, who),
        )
        by_name = {p.cluster: p for p in presence.items}
        return ClusterListOut(
            items=[
                logic.cluster_view(r, by_name.get(r.name), scope)
                for r in records.clusters
                if logic.may_see_cluster(scope, r)
            ]
        )

    @app.get("/api/v1/clusters/{name}", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def get_cluster(name: str, who: Who) -> ClusterOut:
        check_name(name, "cluster name")
        record, presence, scope = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord),
            presence_of(name),
            cluster_scope(platform, who),
        )
        if not logic.may_see_cluster(scope, record):
            raise NotFound(f"cluster {name!r} not found")  # its existence is not the caller's business either
        return logic.cluster_view(record, presence, scope)

    @app.post(
        "/api/v1/clusters",
        response_model=ClusterConnectOut,
        status_code=201,
        responses=ERRORS,
        tags=["clusters"],
    )
    async def connect_cluster(body: ClusterConnectIn, who: Who) -> ClusterConnectOut:
        require_admin(who)
        info = await platform.call(
            subjects.Registry.CLUSTER_CREATE,
            ClusterCreate(
                name=body.name,
                display_name=body.display_name,
                description=body.description,
                labels=body.labels,
                local=body.local,
                token_ttl=body.token_ttl,
                rotate_token=body.rotate_token,
            ),
            ClusterConnectInfo,
        )
        return ClusterConnectOut(
            cluster=logic.cluster_view(info.cluster, None),
            token=info.token,
            expires_at=logic.ts(info.expires_at),  # type: ignore[arg-type]
            nats_url=platform.nats_url,
            agent_command=logic.agent_command(platform.nats_url, info.token, platform.ca_file),
            manifests=manifests.render(
                cluster=info.cluster.name,
                token=info.token,
                server=platform.nats_url,
                ca_pem=manifests.read_ca(platform.ca_file),
            ),
        )

    @app.post("/api/v1/clusters/{name}/disconnect", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def disconnect_cluster(name: str, who: Who) -> ClusterOut:
        require_admin(who)
        check_name(name, "cluster name")
        record = await platform.call(subjects.Registry.CLUSTER_DISCONNECT, NameRequest(name=name), ClusterRecord)
        return logic.cluster_view(record, await presence_of(name))

    install_access_routes(app, platform)
    install_workload_routes(app, platform)
    from services.api.routes_people import install_people_routes
    from services.api.routes_records import install_record_routes

    install_people_routes(app, platform)
    install_record_routes(app, platform)
    from services.api.routes_meta import install_meta_routes

    install_meta_routes(app)
    from services.api.web import install_web  # the UI's routes use this module's auth

    install_web(app)
    from services.api.audit import install_audit

    install_audit(app, platform)
    from services.api.gateway import install_gateway

    install_gateway(app, platform)
    from services.api.events import install_events

    install_events(app, platform)
    from services.api.openapi import describe

    describe(app)
    from services.api.limits import BodyLimit

    app.add_middleware(BodyLimit)  # outside the audit: a refused body is never read
    if platform.telemetry is not None:
        from services.api.observing import Observe

        app.add_middleware(Observe, telemetry=platform.telemetry)  # outermost: spans cover the audit too
    return app


async def authorize(
    platform: Platform, who: Principal, action: AccessAction, project: str = "", owner: str = ""
) -> Decision:
    """Ask access whether ``who`` may do ``action``; raise Forbidden with its reason when not."""
    if who.platform_admin:
        return Decision(allowed=True, reason="platform admin")
    decision = await platform.call(
        subjects.Access.AUTHORIZE, Authorize(user=who.user, action=action, project=project, owner=owner), Decision
    )
    if not decision.allowed:
        raise Forbidden(decision.reason)
    return decision


async def visible(platform: Platform, who: Principal) -> VisibleProjects:
    return await platform.call(subjects.Access.VISIBLE, NameRequest(name=who.user), VisibleProjects)


async def cluster_scope(platform: Platform, who: Principal) -> list[ProjectRecord] | None:
    """The projects whose clusters (and tenants on them) ``who`` may see; None: everything (platform admin)."""
    if who.platform_admin:
        return None
    seen = await visible(platform, who)
    if seen.all:
        return None
    if not seen.projects:
        return []
    found = await platform.call(subjects.Projects.LIST, NamesRequest(names=tuple(seen.projects)), ProjectList)
    return found.projects


async def all_workloads(platform: Platform) -> list[WorkloadRecord]:
    tenants, spaces = await asyncio.gather(
        platform.call(subjects.Lifecycle.LIST, WorkloadQuery(kind="tenant", all=True), WorkloadList),
        platform.call(subjects.Lifecycle.LIST, WorkloadQuery(kind="space", all=True), WorkloadList),
    )
    return tenants.items + spaces.items


def install_access_routes(app: FastAPI, platform: Platform) -> None:
    @app.post("/api/v1/users", response_model=UserCreatedOut, status_code=201, responses=ERRORS, tags=["access"])
    async def create_user(body: UserIn, who: Who) -> UserCreatedOut:
        require_admin(who)
        created = await platform.call(
            subjects.Access.USER_CREATE,
            UserCreate(name=body.name, email=body.email, platform_admin=body.platform_admin),
            UserCreated,
        )
        return UserCreatedOut(user=logic.user_view(created.user), token=created.token)

    @app.get("/api/v1/users", response_model=UserListOut, responses=ERRORS, tags=["access"])
    async def list_users(who: Who) -> UserListOut:
        require_admin(who)
        users = await platform.call(subjects.Access.USER_LIST, Empty(), UserList)
        return UserListOut(items=[logic.user_view(u) for u in users.users])

    @app.post("/api/v1/teams", response_model=TeamOut, status_code=201, responses=ERRORS, tags=["access"])
    async def create_team(body: TeamIn, who: Who) -> TeamOut:
        require_admin(who)
        team = await platform.call(
            subjects.Access.TEAM_CREATE, TeamCreate(name=body.name, members=tuple(body.members)), TeamRecord
        )
        return logic.team_view(team)

    @app.get("/api/v1/teams", response_model=TeamListOut, responses=ERRORS, tags=["access"])
    async def list_teams(who: Who) -> TeamListOut:
        require_admin(who)
        teams = await platform.call(subjects.Access.TEAM_LIST, Empty(), TeamList)
        return TeamListOut(items=[logic.team_view(t) for t in teams.teams])

    @app.post("/api/v1/teams/{team}/members", response_model=TeamOut, responses=ERRORS, tags=["access"])
    async def add_team_member(team: str, body: TeamMemberIn, who: Who) -> TeamOut:
        require_admin(who)
        check_name(team, "team name")
        record = await platform.call(
            subjects.Access.TEAM_ADD_MEMBER, TeamMemberAdd(team=team, user=body.user), TeamRecord
        )
        return logic.team_view(record)

    async def project_out(name: str, who: Who, role: str | None) -> ProjectOut:
        project, membership, records = await asyncio.gather(
            platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord),
            platform.call(subjects.Access.MEMBERS_GET, NameRequest(name=name), Membership),
            all_workloads(platform),
        )
        return logic.project_view(project, membership, records, role)

    @app.post("/api/v1/projects", response_model=ProjectOut, status_code=201, responses=ERRORS, tags=["projects"])
    async def create_project(body: ProjectIn, who: Who) -> ProjectOut:
        require_admin(who)
        q = body.quota
        await platform.call(
            subjects.Projects.CREATE,
            ProjectCreate(
                name=body.name,
                display_name=body.display_name,
                clusters=tuple(body.clusters),
                cluster_selector=body.cluster_selector,
                created_by=who.user,
                quota=Quota(tenants=q.tenants, spaces=q.spaces, cpu=q.cpu, memory=q.memory),
            ),
            ProjectRecord,
        )
        return await project_out(body.name, who, None)

    @app.get("/api/v1/projects", response_model=ProjectListOut, responses=ERRORS, tags=["projects"])
    async def list_projects(who: Who) -> ProjectListOut:
        seen = await visible(platform, who)
        projects, records = await asyncio.gather(
            platform.call(subjects.Projects.LIST, NamesRequest(names=tuple(seen.projects), all=seen.all), ProjectList),
            all_workloads(platform),
        )
        memberships = await asyncio.gather(
            *(
                platform.call(subjects.Access.MEMBERS_GET, NameRequest(name=p.name), Membership)
                for p in projects.projects
            )
        )
        return ProjectListOut(
            items=[
                logic.project_view(p, m, records, seen.projects.get(p.name))
                for p, m in zip(projects.projects, memberships, strict=True)
            ]
        )

    @app.get("/api/v1/projects/{name}", response_model=ProjectOut, responses=ERRORS, tags=["projects"])
    async def get_project(name: str, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.read", name)
        return await project_out(name, who, decision.role)

    @app.put("/api/v1/projects/{name}/members", response_model=ProjectOut, responses=ERRORS, tags=["projects"])
    async def set_member(name: str, body: MemberIn, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.manage", name)
        await platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)
        await platform.call(
            subjects.Access.MEMBER_SET,
            MemberChange(project=name, user=body.user, team=body.team, role=body.role),
            Membership,
        )
        return await project_out(name, who, decision.role)

    @app.delete(
        "/api/v1/projects/{name}/members/{kind}/{member}",
        response_model=ProjectOut,
        responses=ERRORS,
        tags=["projects"],
    )
    async def remove_member(name: str, kind: Literal["user", "team"], member: str, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.manage", name)
        await platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)
        change = MemberChange(
            project=name, user=member if kind == "user" else "", team=member if kind == "team" else "", role=None
        )
        await platform.call(subjects.Access.MEMBER_SET, change, Membership)
        return await project_out(name, who, decision.role)


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

    base = f"/api/v1/projects/{{project}}/{plural}"
    app.add_api_route(
        base,
        create,
        methods=["POST"],
        response_model=WorkloadOut,
        status_code=201,
        responses=ERRORS,
        tags=tags,
        name=f"create_{kind}",
        summary=f"Create a {kind}",
    )
    app.add_api_route(
        f"/api/v1/{plural}",
        list_all,
        methods=["GET"],
        response_model=WorkloadListOut,
        responses=ERRORS,
        tags=tags,
        name=f"list_{plural}",
        summary=f"List {plural} the caller may see",
    )
    app.add_api_route(
        f"{base}/{{name}}",
        get_one,
        methods=["GET"],
        response_model=WorkloadOut,
        responses=ERRORS,
        tags=tags,
        name=f"get_{kind}",
        summary=f"Get a {kind}",
    )
    app.add_api_route(
        f"{base}/{{name}}",
        delete,
        methods=["DELETE"],
        response_model=WorkloadOut,
        responses=ERRORS,
        tags=tags,
        name=f"delete_{kind}",
        summary=f"Delete a {kind}",
    )
    if kind == "tenant":

        async def sleep(project: str, name: str, who: Who) -> WorkloadOut:
            return await act(project, name, "sleep", who)

        async def wake(project: str, name: str, who: Who) -> WorkloadOut:
            return await act(project, name, "wake", who)

        async def upgrade(project: str, name: str, body: UpgradeIn, who: Who) -> WorkloadOut:
            return await act(project, name, "upgrade", who, body.version)

        for verb, fn in (("sleep", sleep), ("wake", wake), ("upgrade", upgrade)):
            app.add_api_route(
                f"{base}/{{name}}/{verb}",
                fn,
                methods=["POST"],
                response_model=WorkloadOut,
                responses=ERRORS,
                tags=tags,
                name=f"{verb}_tenant",
                summary=f"{verb.capitalize()} a tenant",
            )
