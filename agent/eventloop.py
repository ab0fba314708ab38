"""The agent's event loop: uvloop, with the standard library's TLS protocol for the connections it opens.

uvloop 0.23's TLS protocol drops what it has read but not yet handed over when the peer closes while the
application has paused reading (MagicStack/uvloop#661). The agent pauses reading a Kubernetes API server's
WebSocket whenever a tunnel's credits are spent, and the API server closes right after an exec's last output,
so the tail of that output was lost under load (tests/bench/RESULTS.md, "An exec's output cut under CPU
load"). The standard library's TLS protocol waits for the application to read on: run over uvloop's TCP
transport it delivers every byte (a 2 MiB stream cut 5 of 5 times on uvloop, whole 5 of 5 this way), while
the loop and the plain sockets (NATS, the bulk of the agent's work) stay in uvloop's C.

Connections opened with ``create_connection(ssl=...)`` take this path: aiohttp's and websockets' to the
Kubernetes API server. nats-py upgrades its socket with ``start_tls``, which stays uvloop's: the NATS
server never closes a connection it still has to deliver on.
"""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from asyncio import sslproto
from collections.abc import Awaitable, Callable
from typing import Any, cast

import uvloop

TLS_READ_BUFFER = 64 * 1024
"""Ciphertext read per socket read. The standard library's default is 256 KiB, zero-filled per connection:
with one connection per relayed watch that was ~300 KiB of agent memory per watch (74 KiB on uvloop's)."""


class _TlsProtocol(sslproto.SSLProtocol):
    max_size = TLS_READ_BUFFER


class AgentLoop(uvloop.Loop):
    async def create_connection(  # type: ignore[override]
        self,
        protocol_factory: Callable[[], asyncio.BaseProtocol],
        host: str | None = None,
        port: int | None = None,
        *,
        ssl: ssl_module.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        ssl_shutdown_timeout: float | None = None,
        **kwargs: Any,
    ) -> tuple[asyncio.BaseTransport, asyncio.BaseProtocol]:
        # uvloop's stub narrows host and port to str and int; sock= connections pass None for both.
        connect = cast(
            Callable[..., Awaitable[tuple[asyncio.BaseTransport, asyncio.BaseProtocol]]], super().create_connection
        )
        if not ssl:
            return await connect(protocol_factory, host, port, **kwargs)
        context = ssl if isinstance(ssl, ssl_module.SSLContext) else ssl_module.create_default_context()
        if server_hostname is None:
            if host is None:
                raise ValueError("server_hostname is required with a socket and TLS")
            server_hostname = host
        app = protocol_factory()
        waiter: asyncio.Future[None] = self.create_future()
        tls = _TlsProtocol(
            self,
            app,
            context,
            waiter,
            server_side=False,
            server_hostname=server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,  # type: ignore[arg-type]  # typeshed says int
            ssl_shutdown_timeout=ssl_shutdown_timeout,
        )
        transport, _ = await connect(lambda: tls, host, port, **kwargs)
        try:
            await waiter
        except BaseException:
            transport.close()
            raise
        return tls._app_transport, app
