"""The Kubernetes gateway in the API: kubectl talks to ``/kubernetes/project/<p>/space|tenant/<name>/...``.

Each request is authenticated (the member's API token, usually from ``tether token``), rate-limited per
member (``gateway_limits``: 429 with Retry-After),
refused when it carries ``Impersonate-*`` headers (the gateway says who the caller is,
never the caller), authorised (a member of the project who is a member of the
workload), refused at once when the workload's cluster is offline, woken when it sleeps (``gateway_wake``: served
once Ready, or 503 with Retry-After after a bound), and forwarded to
that cluster's agent over NATS (``schemas.gateway``). The agent calls the Kubernetes
API server as ``tether:user:<name>``; Kubernetes RBAC in the space (or inside the
tenant cluster) decides what the member may do. Errors are Kubernetes ``Status``
objects, so kubectl prints them as it prints the API server's own.

Answers stream back frame by frame: a watch or ``logs -f`` holds at most one
window of frames here, and a client that goes away cancels the upstream call.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from opentelemetry import trace
from starlette.requests import HTTPConnection

from schemas import subjects
from schemas.audit import AuditRecord
from schemas.errors import InvalidInput, TetherError, Unauthenticated, Unavailable
from schemas.gateway import (
    HEAD_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_REQUEST_BODY,
    WINDOW,
    GatewayFrame,
    GatewayRequest,
    clean_path,
    impersonation_headers,
    request_headers,
)
from schemas.gateway_streams import spdy_refusal
from schemas.messages import Presence, Principal, WorkloadRecord
from schemas.names import check_name
from services.api.auth import Change, Platform, bearer_token
from services.api.gateway_access import Access, Resolver
from services.api.gateway_holds import AccessEnded, Holder, OpenStreams
from services.api.gateway_limits import MemberLimiter
from services.api.gateway_wake import NotAwake, Waker, asleep, waking
from services.bus.gateway import GatewayStream, NoAgent, StreamBroken, link_over

logger = logging.getLogger(__name__)

PREFIX = "/kubernetes/project"
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
AUDIT_RESULT_MAX = 300
"""Characters of a reason kept in an audit record's result (access's reasons are a line)."""

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    410: "Gone",
    413: "RequestEntityTooLarge",
    429: "TooManyRequests",
    501: "NotImplemented",
    502: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class Refused(Exception):
    """An answer the gateway gives itself (a Kubernetes Status)."""

    def __init__(self, code: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


def status(code: int, message: str, retry_after: int | None = None) -> JSONResponse:
    """A Kubernetes ``Status`` answer (kubectl prints ``Error from server (<reason>): <message>``)."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": REASONS.get(code, "InternalError"),
        "code": code,
    }
    if retry_after is not None:
        body["details"] = {"retryAfterSeconds": retry_after}
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse(status_code=code, content=body, headers=headers)


_HTTP = {"401": 401, "403": 403, "404": 404, "400": 400, "409": 409, "410": 410, "503": 503}


def refusal_of(exc: TetherError) -> Refused:
    code = _HTTP.get(exc.code, 503 if isinstance(exc, Unavailable) else 500)
    return Refused(code, exc.description)


RECONNECT_RETRY_AFTER = 1
"""Seconds kubectl is told to wait (it retries by itself) when a cluster's agent has not reconnected yet since
the platform restarted."""


def offline_text(cluster: str, presence: Presence | None) -> str:
    if presence is None or not presence.last_seen:
        return f"cluster {cluster!r} is offline (its agent has not connected yet)"
    since = datetime.fromtimestamp(presence.last_seen, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"cluster {cluster!r} is offline since {since}: its agent is not connected"


def readiness_refusal(record: WorkloadRecord) -> Refused | None:
    """Why the workload cannot be reached now (None when it can)."""
    kind, spec = record.spec.kind, record.spec
    what = f"{kind} {spec.project}/{spec.name}"
    if spec.state == "deleted" or record.phase == "Deleting":
        return Refused(404, f"{what} is being deleted")
    if spec.state == "sleeping" or record.phase == "Sleeping":
        return Refused(503, f"{what} is asleep: wake it ('tether {kind} wake {spec.name} -p {spec.project}')", 30)
    if record.observed is None:
        return Refused(503, f"{what} is not ready yet (phase {record.phase})", 5)
    return None


class Gateway:
    """The routes' state: the bus link, who may reach what (``resolver``) and the open streams (``holds``)."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.link = link_over(platform.bus)
        self._started = False
        self._start_lock = asyncio.Lock()
        self.resolver = Resolver(platform)
        """Who may reach what, and whether its cluster is there, kept for a moment (``gateway_access``)."""
        self._background: set[asyncio.Task[None]] = set()
        from services.api.gateway_streams import RecentRefusals

        self.refusals = RecentRefusals()
        """Why a member's WebSocket was refused, for kubectl's SPDY retry (``services.api.gateway_streams``)."""
        self.limiter = MemberLimiter()
        self.holds = OpenStreams(self.recheck, self.audit_ended)
        """The open streams and who opened them: they end when that access does (``gateway_holds``)."""
        platform.on_forget.append(self.access_changed)
        self.waker = Waker(
            lambda action: platform.call(subjects.Lifecycle.ACTION, action, WorkloadRecord),
            lambda ref: platform.call(subjects.Lifecycle.GET, ref, WorkloadRecord),
        )

    async def ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if not self._started:
                await self.link.start()
                self._started = True

    # --- who and what -------------------------------------------------------------------------------
    def access_changed(self, change: Change) -> None:
        """Access ended something (a token, a membership, a role): nothing resolved before may be reused, and
        the open streams ``change`` reaches are checked again now."""
        self.resolver.forget()
        self.holds.recheck_soon(change)

    async def recheck(self, holder: Holder) -> None:
        """Is ``holder`` still let in where their stream goes? Raises the refusal, as admission would."""
        who = await self.platform.authenticate(holder.token)
        if who.user != holder.user:
            raise Unauthenticated(f"the token is no longer user {holder.user!r}'s")
        await self.resolver.fresh_access(who, holder.target, holder.project, holder.name)

    async def audit_ended(self, holder: Holder, stream: GatewayStream, what: str, reason: str) -> None:
        """A stream ended because its member's access did: in the audit trail, beside the call that opened it."""
        entry = AuditRecord(
            kind="api",
            at=time.time(),
            user=holder.user,
            action=what,
            target=f"{holder.target}/{holder.project}/{holder.name}",
            cluster=stream.cluster,
            result=f"ended: access ended: {reason}"[:AUDIT_RESULT_MAX],
        )
        try:
            await self.platform.bus.publish(subjects.AUDIT_API, entry)
        except TetherError as exc:  # the stream has ended; losing its record is logged loudly, never silently
            logger.error("audit record lost for the end of %s by %r: %s", what, holder.user, exc.description)

    async def require_online(self, cluster: str) -> None:
        presence = await self.resolver.presence(cluster)
        if presence is None or not presence.online:
            # No Retry-After: kubectl would retry it silently until its timeout instead of saying why.
            raise Refused(503, offline_text(cluster, presence))

    async def no_agent(self, cluster: str, exc: NoAgent) -> Refused:
        """Nobody serves the cluster's gateway although presence says online."""
        presence = await self.resolver.presence(cluster)
        if presence is not None and presence.unheard:
            # Not heard since the platform restarted: its agent is most likely still reconnecting. kubectl
            # tries again by itself after Retry-After, so a restart is not an error to the member; a cluster
            # heard since and then gone is a clear error at once (presence's budget has not run out yet).
            text = f"cluster {cluster!r}: its agent has not reconnected since the platform restarted (try again)"
            return Refused(503, text, RECONNECT_RETRY_AFTER)
        return Refused(503, str(exc))

    async def woken(self, access: Access) -> Access:
        """``access`` with its tenant Ready, woken first if asleep; Refused 503 (Retry-After) after the bound."""
        try:
            record = await self.waker.ready(access.record, access.user)
        except NotAwake as exc:
            raise Refused(503, exc.message, exc.retry_after) from None
        access = dataclasses.replace(access, record=record)
        self.resolver.remember(access)
        return access

    async def admit(self, conn: HTTPConnection, project: str, target: str, name: str) -> tuple[Holder, Access, str]:
        """Every check before a request or tunnel is forwarded: who, on what, at which path (Refused if not)."""
        if target not in ("space", "tenant"):
            raise Refused(404, f"unknown kind {target!r}: expected space or tenant")
        check_name(project, "project name")
        check_name(name, f"{target} name")
        token, who = await self.principal(conn)
        if wait := self.limiter.take(who.user):
            raise Refused(429, f"too many requests through the gateway from user {who.user!r}: slow down", wait)
        if asked := impersonation_headers(list(conn.headers.items())):
            raise Refused(
                403,
                f"impersonation is not allowed through the Tether gateway ({', '.join(asked)}): requests run as "
                f"the caller, tether:user:{who.user}",
            )
        path = kube_path(conn, project, target, name)
        access = await self.resolver.resolve(who, target, project, name)
        if asleep(access.record) or waking(access.record):  # wake on use (services.api.gateway_wake)
            await self.require_online(access.cluster)
            access = await self.woken(access)
        if refused := readiness_refusal(access.record):
            raise refused
        await self.require_online(access.cluster)
        return Holder(token=token, user=who.user, target=target, project=project, name=name), access, path

    async def principal(self, conn: HTTPConnection) -> tuple[str, Principal]:
        """The caller's token and who it is (the token is kept for the checks of an open stream)."""
        token = bearer_token(conn.headers.get("authorization", ""))
        if not token:
            raise Unauthenticated("missing API token: use a kubeconfig from 'tether space|tenant kubeconfig'")
        who = await self.platform.authenticate(token)
        conn.state.user = who.user
        return token, who

    # --- the exchange -------------------------------------------------------------------------------
    async def open(self, access: Access, request: GatewayRequest) -> tuple[GatewayStream, GatewayFrame]:
        """Send the request; the stream and its head frame (Refused when there is no answer)."""
        await self.ensure_started()
        stream = self.link.open(access.cluster, request.window)
        request = GatewayRequest(**{**_fields(request), "stream": stream.id})
        try:
            await self.link.request(access.cluster, request)
            head = await stream.next(HEAD_TIMEOUT)
        except NoAgent as exc:  # presence has not seen it go yet (its budget is 15 s): no head will come
            await stream.close(cancel=False)
            raise await self.no_agent(access.cluster, exc) from None
        except StreamBroken as exc:
            await stream.close(cancel=True)
            raise Refused(504, f"{exc} (cluster {access.cluster!r})") from None
        except TetherError as exc:
            await stream.close(cancel=False)
            raise refusal_of(exc) from None
        except BaseException:
            self.cancel_later(stream)
            raise
        if head.kind == "error":
            await stream.close(cancel=False)
            raise Refused(head.status or 502, head.error or "the agent could not make the call")
        if head.kind != "head":
            await stream.close(cancel=True)
            raise Refused(502, f"the agent answered with a {head.kind} frame first")
        return stream, head

    def cancel_later(self, stream: GatewayStream) -> None:
        """Tell the agent to stop, from outside a cancelled scope (a client that went away)."""
        task = asyncio.get_running_loop().create_task(stream.close(cancel=True))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def body(self, stream: GatewayStream, holder: Holder, what: str) -> AsyncIterator[bytes]:
        """The answer's bytes as the agent sends them; the upstream call is cancelled if the client goes, or when
        ``holder``'s access ends meanwhile."""
        ended = False
        self.holds.hold(holder, stream, what)
        try:
            while True:
                try:
                    frame = await stream.next(IDLE_TIMEOUT)
                except AccessEnded:
                    return  # logged where it was decided (``gateway_holds``)
                except StreamBroken as exc:
                    logger.warning("gateway stream %s on cluster %r ended: %s", stream.id, stream.cluster, exc)
                    return
                if frame.kind == "data":
                    yield frame.data
                    await stream.consumed(frame)
                elif frame.kind == "end":
                    ended = True
                    return
                else:  # error after the head: nothing to tell the client but the end
                    ended = True
                    logger.warning("gateway stream %s on cluster %r: %s", stream.id, stream.cluster, frame.error)
                    return
        finally:
            self.holds.release(stream)
            if ended:
                self.link.forget(stream.id)
            else:
                self.cancel_later(stream)


def forward_request(access: Access, conn: HTTPConnection, path: str, method: str, **extra: Any) -> GatewayRequest:
    """What the agent is asked to do for an admitted request (``extra``: its body, or a tunnel's fields)."""
    spec = access.record.spec
    return GatewayRequest(
        stream="",
        target=spec.kind,
        project=spec.project,
        name=spec.name,
        user=access.user,
        teams=access.teams,
        method=method,
        path=path,
        query=conn.url.query,
        headers=request_headers(list(conn.headers.items())),
        window=WINDOW,
        **extra,
    )


def _fields(request: GatewayRequest) -> dict[str, Any]:
    return {f: getattr(request, f) for f in request.__struct_fields__}


async def read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            raise Refused(413, f"request body larger than {MAX_REQUEST_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def kube_path(request: HTTPConnection, project: str, target: str, name: str) -> str:
    """The Kubernetes API path after the gateway's prefix, from the raw (undecoded) path."""
    raw = bytes(request.scope.get("raw_path") or request.url.path.encode()).decode("latin-1")
    raw = raw.split("?", 1)[0]
    prefix = f"{PREFIX}/{project}/{target}/{name}"
    if not raw.startswith(prefix + "/"):
        raise Refused(400, "invalid gateway path")
    try:
        return clean_path(raw[len(prefix) :])
    except InvalidInput as exc:
        raise Refused(400, exc.description) from None


def kubectl_version(user_agent: str) -> tuple[int, int] | None:
    """(major, minor) of a ``kubectl/v1.31.2 (...)`` User-Agent, else None."""
    found = re.match(r"^kubectl[^/]*/v(\d+)\.(\d+)", user_agent)
    return (int(found.group(1)), int(found.group(2))) if found else None


def upgrade_refusal(request: Request, earlier: Refused | None) -> Refused | None:
    """The answer to an upgrade the gateway does not carry on plain HTTP (SPDY; WebSocket has its own route).

    ``earlier`` is why this member's WebSocket to the same place was just refused: a kubectl that
    speaks WebSocket retries with SPDY after any refusal, and the reason is what it must print."""
    upgrade = request.headers.get("upgrade", "")
    if not upgrade:
        return None
    version = kubectl_version(request.headers.get("user-agent", ""))
    if version is not None and version >= (1, 31):
        if earlier is not None:
            return earlier
        logger.info("gateway: refused an upgrade to %r from %s", upgrade, request.headers.get("user-agent", ""))
        # This kubectl speaks WebSocket unless told not to (KUBECTL_REMOTE_COMMAND_WEBSOCKETS,
        # KUBECTL_PORT_FORWARD_WEBSOCKETS set to false), or its WebSocket failed before reaching the gateway.
        return Refused(400, spdy_refusal(upgrade) + "; a kubectl that has WebSocket turned off must turn it on")
    if "spdy" in upgrade.lower():
        return Refused(400, spdy_refusal(upgrade))
    return Refused(400, f"unsupported upgrade {upgrade!r}")


def install_gateway(app: FastAPI, platform: Platform) -> Gateway:
    gateway = Gateway(platform)
    app.state.gateway = gateway

    async def proxy(request: Request, project: str, target: str, name: str, path: str) -> Response:
        try:
            return await _proxy(request, project, target, name)
        except Refused as exc:
            return status(exc.code, exc.message, exc.retry_after)
        except TetherError as exc:
            refused = refusal_of(exc)
            return status(refused.code, refused.message)

    async def _proxy(request: Request, project: str, target: str, name: str) -> Response:
        holder, access, path = await gateway.admit(request, project, target, name)
        if refused := upgrade_refusal(request, gateway.refusals.recall(holder.user, f"{path}?{request.url.query}")):
            raise refused
        forward = forward_request(access, request, path, request.method, body=await read_body(request))
        try:
            stream, head = await gateway.open(access, forward)
        except Refused as exc:
            if request.method in MUTATING:
                await _audit(platform, access, forward, str(exc.code))
            raise
        if request.method in MUTATING:
            await _audit(platform, access, forward, str(head.status))
        if head.last:  # a small answer, whole in its head frame
            gateway.link.forget(stream.id)
            return Response(head.data, status_code=head.status, headers=dict(head.headers))
        what = f"{forward.method} {forward.path}"
        return StreamingResponse(
            gateway.body(stream, holder, what), status_code=head.status, headers=dict(head.headers)
        )

    app.add_api_route(
        f"{PREFIX}/{{project}}/{{target}}/{{name}}/{{path:path}}",
        proxy,
        methods=METHODS,
        include_in_schema=False,
    )
    from services.api.gateway_streams import install_tunnels  # exec/attach/cp/port-forward over WebSocket

    install_tunnels(app, platform, gateway)
    return gateway


async def _audit(platform: Platform, access: Access, request: GatewayRequest, result: str) -> None:
    span = trace.get_current_span().get_span_context()
    entry = AuditRecord(
        kind="api",
        at=time.time(),
        user=access.user,
        action=f"{request.method} {request.path}",
        target=f"{request.target}/{request.project}/{request.name}",
        cluster=access.cluster,
        result=result,
        trace_id=f"{span.trace_id:032x}" if span.is_valid else "",
    )
    with contextlib.suppress(TetherError):
        await platform.bus.publish(subjects.AUDIT_API, entry)
