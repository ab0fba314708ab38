"""API ``run``: the HTTP server on the service skeleton (``services.bus.serve``) and its bus."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Unpack

import uvicorn

from schemas import subjects
from schemas.errors import InvalidInput
from schemas.messages import MembershipChanged, SessionsEnded
from services.api.app import create_app
from services.api.auth import EVERYTHING, Change, Platform
from services.api.httpwire import OneWriteHttpProtocol
from services.bus import Delivery, Options, Runtime, serve
from services.bus.settings import FromEnv, ServiceSettings, env

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings(FromEnv):
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    host: str = env("TETHER_HTTP_HOST", "127.0.0.1")
    """Address the HTTP server listens on."""

    port: int = env("TETHER_HTTP_PORT", 8080)
    """HTTP port."""

    public_ca_file: str = env("TETHER_PUBLIC_CA_FILE", "")
    """Path of the NATS CA certificate, for the agent command (TLS only)."""

    public_nats_url: str | None = env("TETHER_PUBLIC_NATS_URL", None)
    """NATS URL agents are told to dial (default: the bus URL)."""

    tls_cert: str = env("TETHER_HTTP_TLS_CERT", "")
    tls_key: str = env("TETHER_HTTP_TLS_KEY", "")
    """HTTPS certificate and key files. kubectl sends no credentials to a plain-HTTP server, so the
    Kubernetes gateway needs HTTPS (here, or at a proxy in front of the API)."""


class _Server(uvicorn.Server):
    """Signals belong to the process's runner, which cancels ``run``; uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _listen(server: _Server) -> asyncio.Task[None]:
    """Start serving HTTP; returns once the socket is bound (a bind error is raised here)."""
    serving = asyncio.create_task(server.serve(), name="api-http")
    while not server.started:
        if serving.done():
            await serving  # raises the bind error
            raise RuntimeError("HTTP server stopped during start")
        await asyncio.sleep(0.05)
    return serving


async def _serve_until_cancelled(server: _Server, serving: asyncio.Task[None]) -> None:
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        await _shut(server, serving)
        raise


async def _shut(server: _Server, serving: asyncio.Task[None]) -> None:
    """Stop taking connections, let in-flight requests finish (10 s at most), then go."""
    if not serving.done():
        server.should_exit = True
        await asyncio.wait([serving], timeout=10)


async def setup(rt: Runtime, settings: Settings) -> None:
    platform = Platform(
        bus=rt.bus,
        nats_url=settings.public_nats_url or settings.common.bus.servers[0],
        request_timeout=settings.common.bus.request_timeout,
        telemetry=rt.telemetry,
        ca_file=settings.public_ca_file,
    )
    app = create_app(platform)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=2,  # open event streams must not hold a stop for long
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        # kubectl's port-forward offers the subprotocol "SPDY/3.1+portforward.k8s.io", not an RFC 6455 token:
        # websockets' sans-I/O server (uvicorn's default) refuses the handshake, wsproto accepts it.
        ws="wsproto",
        http=OneWriteHttpProtocol,  # a response's head and body in one write (``httpwire``)
    )

    async def forget_kept(d: Delivery) -> None:
        # A project's members or roles changed (access announces it), or another replica ended sessions: no session
        # or decision this replica keeps may outlive the change by the few seconds it would keep them.
        platform.forget_sessions(change_noticed(d))

    await rt.subscribe(subjects.MEMBERSHIP_CHANGED, forget_kept)
    await rt.subscribe(subjects.API_SESSIONS_ENDED, forget_kept)
    # Open gateway streams are checked again when access changes, and once a minute (``gateway_holds``).
    rt.task("gateway-recheck", app.state.gateway.holds.run)
    server = _Server(config)
    serving = await _listen(server)
    rt.task("http", functools.partial(_serve_until_cancelled, server, serving))
    rt.on_stop(functools.partial(_shut, server, serving))  # also when the service fails before its tasks run
    scheme = "https" if settings.tls_cert else "http"
    logger.info("api listening on %s://%s:%d", scheme, settings.host, settings.port)


def change_noticed(d: Delivery) -> Change:
    """Whose access a notice says may have ended: a project's (its members or roles changed, or it went), a
    user's, or anything. A notice that cannot be read is taken as anything: forgetting too much only costs a
    few questions asked again."""
    try:
        if d.subject == subjects.MEMBERSHIP_CHANGED:
            return Change(project=d.decode(MembershipChanged).project)
        notice = d.decode(SessionsEnded)
    except InvalidInput:
        return EVERYTHING
    return Change(project=notice.project, user=notice.user)


async def run(settings: Settings, **options: Unpack[Options]) -> None:
    await serve("api", settings.common, functools.partial(setup, settings=settings), **options)
