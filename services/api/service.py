"""API ``run``: the HTTP server on top of one NATS connection."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Generator
from dataclasses import dataclass, field

import uvicorn

from services.api.app import create_app
from services.api.auth import Platform
from services.bus import Telemetry, close, connect
from services.bus.settings import ServiceSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    host: str = "127.0.0.1"
    """Address the HTTP server listens on."""

    port: int = 8080
    """HTTP port."""

    public_ca_file: str = ""
    """Path of the NATS CA certificate, for the agent command (TLS only)."""

    public_nats_url: str | None = None
    """NATS URL agents are told to dial (default: the bus URL)."""

    tls_cert: str = ""
    tls_key: str = ""
    """HTTPS certificate and key files. kubectl sends no credentials to a plain-HTTP server, so the
    Kubernetes gateway needs HTTPS (here, or at a proxy in front of the API)."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=ServiceSettings.from_env(),
            host=os.environ.get("TETHER_HTTP_HOST", "127.0.0.1"),
            port=int(os.environ.get("TETHER_HTTP_PORT", "8080")),
            public_nats_url=os.environ.get("TETHER_PUBLIC_NATS_URL") or None,
            public_ca_file=os.environ.get("TETHER_PUBLIC_CA_FILE", ""),
            tls_cert=os.environ.get("TETHER_HTTP_TLS_CERT", ""),
            tls_key=os.environ.get("TETHER_HTTP_TLS_KEY", ""),
        )


class _Server(uvicorn.Server):
    """Signals belong to the process's runner, which cancels ``run``; uvicorn must not take them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def run(settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None) -> None:
    telemetry = telemetry or Telemetry.create("api", settings.common.telemetry)
    nc = await connect(settings.common.bus, "api")
    try:
        platform = Platform(
            nc=nc,
            nats_url=settings.public_nats_url or settings.common.bus.servers[0],
            request_timeout=settings.common.bus.request_timeout,
            telemetry=telemetry,
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
        )
        server = _Server(config)
        serving = asyncio.create_task(server.serve(), name="api-http")
        while not server.started:
            if serving.done():
                await serving  # raises the bind error
                raise RuntimeError("HTTP server stopped during start")
            await asyncio.sleep(0.05)
        scheme = "https" if settings.tls_cert else "http"
        logger.info("api listening on %s://%s:%d", scheme, settings.host, settings.port)
        if ready:
            ready.set()
        try:
            await asyncio.shield(serving)
        except asyncio.CancelledError:
            # Stop taking connections, let in-flight requests finish, then go.
            server.should_exit = True
            await asyncio.wait([serving], timeout=10)
            raise
    finally:
        await close(nc)
        telemetry.shutdown()
