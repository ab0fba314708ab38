"""The FastAPI application: routes are thin; every decision is made by a service over the bus."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from schemas import subjects
from schemas.api import (
    ClusterConnectIn,
    ClusterConnectOut,
    ClusterListOut,
    ClusterOut,
    ErrorResponse,
    HealthzOut,
    WhoAmIOut,
)
from schemas.errors import Forbidden, TetherError, Unauthenticated
from schemas.messages import (
    Authenticate,
    ClusterConnectInfo,
    ClusterCreate,
    ClusterList,
    ClusterRecord,
    Empty,
    M,
    Message,
    NameRequest,
    Presence,
    PresenceList,
    Principal,
)
from schemas.names import check_name
from services.api import logic
from services.bus import Connection, call
from services.bus.endpoints import ping

logger = logging.getLogger(__name__)

SERVICES = ("registry", "access", "lifecycle", "health")
ERRORS: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 410, 503)
}


@dataclass
class Platform:
    """What the routes reach: the bus, and where agents connect."""

    nc: Connection
    nats_url: str
    request_timeout: float = 5.0
    auth_cache_ttl: float = 5.0

    def __post_init__(self) -> None:
        self._auth_cache: dict[str, tuple[float, Principal]] = {}

    async def call(self, subject: str, message: Message, reply_type: type[M]) -> M:
        return await call(self.nc, subject, message, reply_type, timeout=self.request_timeout)

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
    return await platform_of(request).authenticate(creds.credentials)


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
        records, presence = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList),
            platform.call(subjects.Health.PRESENCE_LIST, Empty(), PresenceList),
        )
        by_name = {p.cluster: p for p in presence.items}
        return ClusterListOut(items=[logic.cluster_view(r, by_name.get(r.name)) for r in records.clusters])

    @app.get("/api/v1/clusters/{name}", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def get_cluster(name: str, who: Who) -> ClusterOut:
        check_name(name, "cluster name")
        record, presence = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord),
            presence_of(name),
        )
        return logic.cluster_view(record, presence)

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
            ),
            ClusterConnectInfo,
        )
        return ClusterConnectOut(
            cluster=logic.cluster_view(info.cluster, None),
            token=info.token,
            expires_at=logic.ts(info.expires_at),  # type: ignore[arg-type]
            nats_url=platform.nats_url,
            agent_command=logic.agent_command(platform.nats_url, info.token),
        )

    @app.post("/api/v1/clusters/{name}/disconnect", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def disconnect_cluster(name: str, who: Who) -> ClusterOut:
        require_admin(who)
        check_name(name, "cluster name")
        record = await platform.call(subjects.Registry.CLUSTER_DISCONNECT, NameRequest(name=name), ClusterRecord)
        return logic.cluster_view(record, await presence_of(name))

    return app
