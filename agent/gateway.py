"""The agent's half of the Kubernetes gateway: members' kubectl requests, made as the member.

The API sends each request on ``tether.gw.<cluster>.req`` (only this agent may
subscribe); this module calls the Kubernetes API server with
``Impersonate-User: tether:user:<name>`` and ``Impersonate-Group`` for each of
the member's teams (``tether:team:<team>``) and ``system:authenticated``, and
sends the answer back as frames on ``tether.gwr.<cluster>.<stream>``.

- **Spaces** reach the host API server, and only their own namespace plus
  discovery (``schemas.gateway.space_path_refusal``, checked here again whatever
  the API decided). Kubernetes RBAC (the space's RoleBindings) decides the rest.
- **Tenant clusters** reach the tenant's own API server (``agent.gateway_tenant``: found in the kubeconfig
  Secret vCluster writes, with the credentials there), never the host's; inside the tenant the members'
  ClusterRoleBindings (kept by the driver) decide.
- **Activity**: every request served marks its space or tenant active; the inventory carries the time
  (``activity``) to lifecycle's auto-sleep, so a busy tenant costs one write per inventory, not per request.
- **Flow control**: at most the credits the API granted are in flight per stream;
  while it waits for credits, the upstream response is not read (TCP pushes back
  on the API server), so a slow reader stalls only its own stream.
- A cancel from the API (its client went away) closes the upstream call; a
  reconnect of the agent ends every open stream (the API side has lost track).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from opentelemetry.trace import SpanKind, Tracer
from yarl import URL

from agent.bus import Connection, Incoming, Subscription
from agent.drivers.kube_objects import GROUP_PREFIX, USER_PREFIX, namespace_name
from agent.gateway_forward import ClientPool, close_session, new_session, relay
from agent.gateway_rbac import GrantError, Grants
from agent.gateway_tenant import TenantUnreachable, TenantUpstreams
from agent.gateway_upstream import Upstream
from schemas import subjects, tracing
from schemas.errors import TetherError, Unavailable
from schemas.gateway import (
    CHUNK,
    MAX_STREAMS,
    PING_INTERVAL,
    WINDOW,
    GatewayControl,
    GatewayFrame,
    GatewayRequest,
    check_stream_id,
    decode,
    encode,
    response_headers,
    space_path_refusal,
)
from schemas.names import check_name

if TYPE_CHECKING:
    from agent.gateway_streams import Tunnel

logger = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)  # not a log line per proxied request

CHECK_TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=30.0, pool=5.0)
"""The agent's own short calls (impersonation grants, a tenant's kubeconfig); members' calls go by aiohttp
(``agent.gateway_forward``)."""
UPSTREAM_REFRESH = 60.0
"""Seconds an upstream's credentials are reused before the driver is asked again (rotated tokens)."""
MAX_ACTIVITY = 10_000

UpstreamSource = Callable[[], Upstream]


class GatewayError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def identity(request: GatewayRequest) -> tuple[str, list[str]]:
    """The Kubernetes user and groups a member's call runs as."""
    user = f"{USER_PREFIX}{check_name(request.user, 'user name')}"
    groups = [f"{GROUP_PREFIX}{check_name(t, 'team name')}" for t in request.teams]
    return user, [*groups, "system:authenticated"]


def impersonation(request: GatewayRequest) -> list[tuple[str, str]]:
    """The headers that make the call the member's own."""
    user, groups = identity(request)
    return [("Impersonate-User", user)] + [("Impersonate-Group", g) for g in groups]


def _where(request: GatewayRequest, cluster: str) -> str:
    if request.target == "tenant":
        return f"tenant cluster {request.project}/{request.name}"
    return f"cluster {cluster!r}"


def _check_client(upstream: Upstream) -> httpx.AsyncClient:
    return httpx.AsyncClient(verify=upstream.ssl_context(), timeout=CHECK_TIMEOUT, trust_env=False)


async def _close_client(client: httpx.AsyncClient) -> None:
    await client.aclose()


class _Stream:
    """One request being served: its credits, its frame numbers, its task."""

    def __init__(self, gateway: AgentGateway, request: GatewayRequest) -> None:
        self.gateway = gateway
        self.request = request
        self.subject = subjects.gateway_frames(gateway.cluster, request.stream)
        self.credits = max(1, min(request.window, WINDOW * 4))
        self.credited = asyncio.Event()
        self.seq = 0
        self.last_sent = time.monotonic()
        self.task: asyncio.Task[None] | None = None
        self.ended_by_reset = False
        self.tunnel: Tunnel | None = None
        """exec/attach/port-forward: the tunnel's input side (``agent.gateway_streams``)."""

    def grant(self, credit: int) -> None:
        self.credits = min(self.credits + max(0, credit), WINDOW * 4)
        self.credited.set()

    async def send(self, frame_kind: str, **fields: Any) -> None:
        numbered = frame_kind not in ("ping", "credit")
        if numbered:
            self.seq += 1
        frame = GatewayFrame(kind=frame_kind, seq=self.seq if numbered else 0, **fields)  # type: ignore[arg-type]
        self.last_sent = time.monotonic()
        await self.gateway.conn.publish_bytes(self.subject, encode(frame))

    async def send_data(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            while self.credits <= 0:
                self.credited.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(PING_INTERVAL):
                        await self.credited.wait()
                if self.credits <= 0:
                    await self.send("ping")
            self.credits -= 1
            await self.send("data", data=data[start : start + CHUNK])

    async def pings(self) -> None:
        """Tell the API the stream is alive while the upstream is quiet; an open stream (a watch, ``logs -f``,
        exec, port-forward) is use of its workload for auto-sleep, as long as it lasts."""
        while True:
            await asyncio.sleep(PING_INTERVAL / 2)
            self.gateway._active(self.request)
            if time.monotonic() - self.last_sent >= PING_INTERVAL:
                with contextlib.suppress(Unavailable):
                    await self.send("ping")


class AgentGateway:
    """Serves this cluster's gateway requests until cancelled."""

    def __init__(
        self,
        conn: Connection,
        cluster: str,
        host: UpstreamSource | None,
        tracer: Tracer,
    ) -> None:
        self.conn = conn
        self.cluster = cluster
        self._host = host
        self._tracer = tracer
        self._streams: dict[str, _Stream] = {}
        self._clients = ClientPool(_check_client, _close_client)
        self._sessions = ClientPool(new_session, close_session)
        self._upstream: tuple[float, Upstream] | None = None
        self._sub: Subscription | None = None
        self._grants = Grants()
        self._tenants = TenantUpstreams(self.host_upstream, self._clients.get)
        self._activity: dict[tuple[str, str, str], float] = {}

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def listen(self) -> None:
        # Before the first heartbeat: kubectl right after the cluster shows online (a restart) was answered
        # "no agent" while the subscription was still being made.
        if self._sub is None:
            self._sub = await self.conn.subscribe(subjects.gateway_agent_inbound(self.cluster))

    async def serve(self) -> None:
        await self.listen()
        assert self._sub is not None
        requests, control = subjects.gateway_requests(self.cluster), subjects.gateway_control(self.cluster)
        async for incoming in self._sub:
            try:
                message = decode(incoming.data)
            except TetherError as exc:
                logger.warning("gateway: ignoring a message on %s: %s", incoming.subject, exc.description)
                continue
            if incoming.subject == requests and isinstance(message, GatewayRequest):
                await self._start(message, incoming)
            elif incoming.subject == control and isinstance(message, GatewayControl):
                self._control(message)

    def _control(self, control: GatewayControl) -> None:
        stream = self._streams.get(control.stream)
        if stream is None:
            return
        if stream.tunnel is not None:
            stream.tunnel.heard()
            if control.seq:
                stream.tunnel.feed(control)
                return
        if control.cancel and stream.task is not None:
            stream.task.cancel()
        elif control.credit:
            stream.grant(control.credit)

    async def _start(self, request: GatewayRequest, incoming: Incoming) -> None:
        try:
            check_stream_id(request.stream)
        except TetherError as exc:
            logger.warning("gateway: %s", exc.description)
            return
        stream = _Stream(self, request)
        if len(self._streams) >= MAX_STREAMS:
            with contextlib.suppress(Unavailable):
                await stream.send("error", status=429, error=f"the agent serves {MAX_STREAMS} streams already")
            return
        self._streams[request.stream] = stream
        stream.task = asyncio.create_task(self._run(stream, incoming.headers), name=f"gateway-{request.stream}")

    def reset(self) -> None:
        """After a reconnect: end every open stream (the API gave them up or will see them end)."""
        for stream in list(self._streams.values()):
            stream.ended_by_reset = True
            if stream.task is not None:
                stream.task.cancel()

    async def _run(self, stream: _Stream, headers: dict[str, str]) -> None:
        request = stream.request
        pinger = asyncio.create_task(stream.pings())
        span_name = f"gateway {request.method} {request.target}"
        try:
            with self._tracer.start_as_current_span(span_name, context=tracing.extract(headers), kind=SpanKind.CLIENT):
                await self._call(stream)
        except asyncio.CancelledError:
            if stream.ended_by_reset:
                with contextlib.suppress(Unavailable):
                    await stream.send("end")
        except GatewayError as exc:
            with contextlib.suppress(Unavailable):
                await stream.send("error", status=exc.status, error=exc.message)
        except Unavailable as exc:
            logger.info("gateway stream %s: %s", request.stream, exc.description)
        except Exception:
            logger.exception("gateway stream %s failed", request.stream)
            with contextlib.suppress(Unavailable):
                await stream.send("error", status=502, error="the agent failed to make the call (see its log)")
        finally:
            pinger.cancel()
            self._streams.pop(request.stream, None)

    async def upstream_for(self, request: GatewayRequest) -> Upstream:
        """The API server a request goes to: the host's for a space, the tenant's own for a tenant cluster."""
        if request.target != "tenant":
            return self._target(request)
        namespace = namespace_name("tenant", check_name(request.project), check_name(request.name))
        try:
            return await self._tenants.get(namespace, f"tenant cluster {request.project}/{request.name}")
        except TenantUnreachable as exc:
            raise GatewayError(exc.status, exc.message) from None

    def activity(self) -> dict[tuple[str, str, str], float]:
        """(kind, project, name) -> when a member's request was last served (for the inventory)."""
        return dict(self._activity)

    def _active(self, request: GatewayRequest) -> None:
        key = (request.target, request.project, request.name)
        if key not in self._activity and len(self._activity) >= MAX_ACTIVITY:
            self._activity.pop(next(iter(self._activity)))
        self._activity[key] = time.time()

    def _target(self, request: GatewayRequest) -> Upstream:
        """A space's upstream (the host's API server), after its path was checked."""
        namespace = namespace_name("space", check_name(request.project), check_name(request.name))
        try:
            refusal = space_path_refusal(request.method, request.path, namespace)
        except TetherError as exc:
            raise GatewayError(400, exc.description) from None
        if refusal:
            raise GatewayError(403, refusal)
        return self.host_upstream()

    def host_upstream(self) -> Upstream:
        if self._host is None:
            raise GatewayError(501, f"cluster {self.cluster!r} has no Kubernetes API (its agent runs the sim driver)")
        now = time.monotonic()
        if self._upstream is None or now - self._upstream[0] > UPSTREAM_REFRESH:
            self._upstream = (now, self._host())
        return self._upstream[1]

    async def _call(self, stream: _Stream) -> None:
        request = stream.request
        try:
            upstream = await self.upstream_for(request)
            headers = [*request.headers, *impersonation(request), ("Accept-Encoding", "identity")]
        except TetherError as exc:
            raise GatewayError(400, exc.description) from None
        auth = [("Authorization", upstream.authorization)] if upstream.authorization else []
        headers += [*auth, *tracing.inject().items()]
        url = f"{upstream.url}{request.path}" + (f"?{request.query}" if request.query else "")
        client = self._clients.get(upstream)
        if request.target == "space":  # inside a tenant the agent holds the tenant's admin: nothing to grant
            try:
                await self._grants.ensure(client, upstream.url, auth, *identity(request))
            except (GrantError, httpx.HTTPError) as exc:
                raise GatewayError(503, f"cannot set up impersonation on cluster {self.cluster!r}: {exc}") from None
        self._active(request)
        if request.upgrade:
            from agent.gateway_streams import serve_tunnel  # exec/attach/cp/port-forward

            await serve_tunnel(stream, upstream, url, headers)
            await stream.send("end")
            return
        session = self._sessions.get(upstream)
        try:
            # encoded: the path and query go as the client wrote them (yarl would re-quote them).
            call = session.request(request.method, URL(url, encoded=True), headers=headers, data=request.body or None)
            async with call as resp:
                if resp.status == 401:
                    # The agent's own credentials, not the member's: kubectl must not take it for its own.
                    if request.target == "tenant":
                        self._tenants.forget(namespace_name("tenant", request.project, request.name))
                    where = _where(request, self.cluster)
                    text = f"the Kubernetes API server of {where} refused the agent's credentials"
                    raise GatewayError(502, text)
                if resp.status == 403:
                    first = await resp.read()
                    if b"cannot impersonate" in first and request.target == "space":
                        self._grants.forget()  # the role was put back to its seed (manifests re-applied)
                    await stream.send("head", status=403, headers=response_headers(list(resp.headers.items())))
                    await stream.send_data(first)
                    await stream.send("end")
                    return
                await relay(stream, resp)
                return
        except (aiohttp.ClientError, TimeoutError) as exc:
            if stream.seq == 0:
                text = f"cannot reach the Kubernetes API server of cluster {self.cluster!r}: {exc}"
                raise GatewayError(503, text) from None
            logger.info("gateway stream %s: upstream ended: %s", request.stream, exc)
        await stream.send("end")

    async def close(self) -> None:
        self.reset()
        tasks = [s.task for s in self._streams.values() if s.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=2)
        if self._sub is not None:
            await self._sub.unsubscribe()
        await self._clients.close()
        await self._sessions.close()
