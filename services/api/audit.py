"""The audit trail at the API's edge: record every mutating call; read the trail back."""

# No "from __future__ import annotations": FastAPI resolves the route's local annotations at definition.
import logging
import time
import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, FastAPI, Query, Request
from opentelemetry import trace
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import subjects
from schemas.audit import AuditListOut, AuditOut, AuditRecord
from schemas.errors import InvalidInput, TetherError
from schemas.names import check_name
from schemas.units import parse_duration
from services.api.auth import ERRORS, Platform, Who, require_admin

logger = logging.getLogger(__name__)

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

AUDITED_BY_COMMAND = "audited_by_command"
"""Request state: the call's record is the command's audit record (lifecycle wrote it before answering)."""


class ApiCall:
    """A mutating call that may issue a command: the operation id the API picks for it and the call's line.

    Lifecycle writes the command's audit record naming the call, before it answers; when the answer carries
    this operation id, that record stands for the call and the middleware writes none (one record per call
    and command instead of two). Any other answer (nothing changed, a retry of a pending operation, an error)
    leaves the call's own record to the middleware.
    """

    def __init__(self, request: Request) -> None:
        self.op_id = uuid.uuid4().hex
        self.line = f"{request.method} {request.scope['path']}"
        self._state = request.state

    def issued(self, op_id: str) -> None:
        """The answer carries ``op_id``: mark the call audited if it is this call's."""
        if op_id == self.op_id:
            setattr(self._state, AUDITED_BY_COMMAND, True)


async def api_call(request: Request) -> ApiCall:
    """The dependency: an ``async`` function, because FastAPI runs a plain callable (the class itself) in its
    thread pool, and that hop (a worker thread waiting for the GIL the busy event loop holds, then waking the
    loop) was on every mutating call's path."""
    return ApiCall(request)


Call = Annotated[ApiCall, Depends(api_call)]


def install_audit(app: FastAPI, platform: "Platform") -> None:
    class AuditMiddleware:
        """Pure ASGI (streams such as server-sent events pass through untouched)."""

        def __init__(self, inner: ASGIApp) -> None:
            self.inner = inner

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http" or scope["method"] not in MUTATING or not scope["path"].startswith("/api/"):
                await self.inner(scope, receive, send)
                return
            status = 500
            scope.setdefault("state", {})  # the auth dependency writes the caller here

            async def capture(message: Message) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = int(message["status"])
                await send(message)

            try:
                await self.inner(scope, receive, capture)
            finally:
                if not (status < 400 and (scope.get("state") or {}).get(AUDITED_BY_COMMAND)):
                    await record(scope, status)

    async def record(scope: Scope, status: int) -> None:
        path: str = scope["path"]
        state = scope.get("state") or {}
        span = trace.get_current_span().get_span_context()
        parts = path.removeprefix("/api/v1/").split("/")
        entry = AuditRecord(
            kind="api",
            at=time.time(),
            user=str(state.get("user", "")),
            action=f"{scope['method']} {path}",
            target=path.removeprefix("/api/v1/"),
            result=str(status),
            trace_id=f"{span.trace_id:032x}" if span.is_valid else "",
            cluster=parts[1] if parts[0] == "clusters" and len(parts) > 1 else "",
        )
        try:
            await platform.bus.publish(subjects.AUDIT_API, entry)
        except TetherError as exc:
            # The change is done; losing its record is logged loudly, never silently.
            logger.error("audit record lost for %s: %s", entry.action, exc.description)

    app.add_middleware(AuditMiddleware)

    @app.get("/api/v1/audit", response_model=AuditListOut, responses=ERRORS, tags=["audit"])
    async def list_audit(
        who: Who,
        since: Annotated[
            str, Query(description="How far back: a duration (1h, 2d) or an ISO 8601 time", max_length=64)
        ] = "24h",
        user: Annotated[str | None, Query(description="Only this user", max_length=63)] = None,
        cluster: Annotated[str | None, Query(description="Only this cluster", max_length=63)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> AuditListOut:
        require_admin(who)
        start = _since(since)
        if cluster:
            check_name(cluster, "cluster name")
        records = await platform.bus.read_since(
            subjects.AUDIT_STREAM,
            subjects.AUDIT_ANY,
            start,
            AuditRecord,
            limit=limit,
            keep=lambda r: (user is None or r.user == user) and (cluster is None or r.cluster == cluster),
        )
        return AuditListOut(items=[_out(r) for r in records])


MAX_LOOKBACK = 3650 * 86400.0
"""Ten years: far more than the AUDIT stream keeps (90 days), far less than what overflows a date."""


def _since(text: str) -> datetime:
    try:
        seconds = parse_duration(text)
    except InvalidInput:
        pass
    else:
        if seconds > MAX_LOOKBACK:
            raise InvalidInput(f"invalid since {text!r}: at most 3650d back (the audit trail keeps 90 days)")
        return datetime.fromtimestamp(time.time() - seconds, UTC)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"invalid since {text!r}: expected a duration (1h, 2d) or an ISO 8601 time") from None
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    # Older than anything kept means "from the start"; a date near year 1 must not overflow on the way.
    return max(when, datetime.fromtimestamp(time.time() - MAX_LOOKBACK, UTC))


def _out(r: AuditRecord) -> AuditOut:
    return AuditOut(
        kind=r.kind,
        at=datetime.fromtimestamp(r.at, UTC),
        user=r.user,
        action=r.action,
        target=r.target,
        cluster=r.cluster,
        result=r.result,
        trace_id=r.trace_id,
        op_id=r.op_id,
        call=r.call,
    )
