"""The FastAPI application: routes are thin; every decision is made by a service over the bus.

Each group of routes is its own module (``routes_*``, ``web``, ``audit``, ``events``, ``gateway``), all
over the shared request context in ``auth``; this module only assembles them.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from schemas.api import HealthzOut
from schemas.errors import TetherError
from services.api import logic
from services.api.audit import install_audit
from services.api.auth import Platform
from services.api.events import install_events
from services.api.gateway import install_gateway
from services.api.limits import BodyLimit
from services.api.observing import Observe
from services.api.openapi import describe
from services.api.routes_access import install_access_routes
from services.api.routes_clusters import install_cluster_routes
from services.api.routes_meta import install_meta_routes
from services.api.routes_people import install_people_routes
from services.api.routes_records import install_record_routes
from services.api.routes_workloads import install_workload_routes
from services.api.web import install_web

logger = logging.getLogger(__name__)

SERVICES = ("registry", "access", "lifecycle", "health")


def create_app(platform: Platform) -> FastAPI:
    app = FastAPI(
        # The API traces and measures itself on the providers it is given (``Observe``); FastAPI's own telemetry
        # would report each request again to OpenTelemetry's global providers, and look them up on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Tether API",
        version="1",
        description="Run many Kubernetes clusters as one. Every call needs `Authorization: Bearer <token>`.",
    )
    app.state.platform = platform

    @app.exception_handler(TetherError)
    async def tether_error(_request: Request, exc: TetherError) -> JSONResponse:
        status = logic.http_status(exc)
        if status >= 500:
            # A part away for a moment (a restart, an election) is told to try again; only the rest is a failure.
            logger.log(logging.WARNING if exc.retryable else logging.ERROR, "request failed: %s", exc.description)
        wait = logic.retry_after(exc)
        return JSONResponse(
            status_code=status,
            content={"error": {"code": exc.code, "message": exc.description}},
            headers={"Retry-After": str(wait)} if wait is not None else None,
        )

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
        results = await asyncio.gather(*(platform.bus.ping(s) for s in SERVICES))
        services = dict(zip(SERVICES, results, strict=True))
        ok = platform.bus.connected and all(results)
        body = HealthzOut(status="ok" if ok else "starting", services=services)
        return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())

    # Starlette tries the routes in order on every request: the commands' routes (sleep, wake, create; the
    # busiest by far) first, so a command is not matched against two dozen others. No other route's path can
    # match theirs, so the order changes nothing else (only the order of the OpenAPI document's paths).
    install_workload_routes(app, platform)
    install_cluster_routes(app, platform)
    install_access_routes(app, platform)
    install_people_routes(app, platform)
    install_record_routes(app, platform)
    install_meta_routes(app)
    install_web(app)
    install_audit(app, platform)
    install_gateway(app, platform)
    install_events(app, platform)
    describe(app)
    app.add_middleware(BodyLimit)  # outside the audit: a refused body is never read
    if platform.telemetry is not None:
        app.add_middleware(Observe, telemetry=platform.telemetry)  # outermost: spans cover the audit too
    return app
