"""How the agent relays a plain HTTP answer (everything but tunnels) from the Kubernetes API server to the API.

The body is read with aiohttp, whose C parser takes a chunked answer apart without a Python step per chunk:
kube-apiserver writes a large list in pieces of about 4 KiB, and with httpx each piece cost the agent a
dozen Python calls (h11 event, anyio timeout scope, exception mapping): a 5,000-object list spent 60 % of
the agent's CPU there (py-spy, tests/bench/RESULTS.md). ``iter_any`` hands over whatever has arrived in one
piece, so a frame carries up to ``CHUNK`` bytes when the answer is big, and a watch event at once when it is
alone. While the stream has no credits the body is not read: aiohttp stops reading the socket once its
buffer holds ``READ_BUFFER`` bytes, and TCP pushes back on the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Generic, TypeVar

import aiohttp

from agent.gateway_upstream import Upstream
from schemas.gateway import CHUNK, MAX_STREAMS, response_headers

if TYPE_CHECKING:
    from agent.gateway import _Stream

READ_BUFFER = CHUNK
"""Bytes aiohttp reads ahead of the relay per answer (it pauses the socket at twice this)."""
MAX_CLIENTS = 128
"""Clients (one per API server and TLS identity) kept; the least recently used is closed beyond."""
CLIENT_DRAIN = 300.0
"""Seconds a client pushed out keeps serving its open streams before it is closed."""
UPSTREAM_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=5.0, sock_connect=5.0, sock_read=None)
"""No read timeout: a watch or ``logs -f`` is quiet for as long as it likes (the client's own
``timeout=`` goes to the API server in the query, which ends the call)."""

C = TypeVar("C")


class ClientPool(Generic[C]):
    """HTTP clients by TLS identity, at most ``MAX_CLIENTS``; one pushed out is closed after ``CLIENT_DRAIN``."""

    def __init__(self, make: Callable[[Upstream], C], close: Callable[[C], Awaitable[object]]) -> None:
        self._make = make
        self._close = close
        self._clients: dict[tuple[str, str, str, str, bool], C] = {}
        self._draining: set[asyncio.Task[None]] = set()

    def get(self, upstream: Upstream) -> C:
        client = self._clients.pop(upstream.tls_key, None)
        if client is None:
            while len(self._clients) >= MAX_CLIENTS:
                self._drain(self._clients.pop(next(iter(self._clients))))
            client = self._make(upstream)
        self._clients[upstream.tls_key] = client  # most recently used last
        return client

    def _drain(self, client: C) -> None:
        async def close_later() -> None:
            try:
                await asyncio.sleep(CLIENT_DRAIN)
            finally:
                await self._close(client)

        task = asyncio.get_running_loop().create_task(close_later())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)

    async def close(self) -> None:
        for task in list(self._draining):
            task.cancel()
        if self._draining:
            await asyncio.wait(list(self._draining), timeout=2)
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await self._close(client)
        self._clients.clear()


def new_session(upstream: Upstream) -> aiohttp.ClientSession:
    """A session for one API server, as the agent (its own CA and client certificate)."""
    connector = aiohttp.TCPConnector(ssl=upstream.ssl_context(), limit=MAX_STREAMS, limit_per_host=0)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=UPSTREAM_TIMEOUT,
        auto_decompress=False,
        trust_env=False,
        read_bufsize=READ_BUFFER,
    )


async def close_session(session: aiohttp.ClientSession) -> None:
    await session.close()


async def relay(stream: _Stream, resp: aiohttp.ClientResponse) -> None:
    """The answer's head and body as frames: a small answer of known length in one frame (head, body and end:
    half the messages), else a head and data frames of whatever has arrived, up to ``CHUNK`` each."""
    headers = response_headers(list(resp.headers.items()))
    length = resp.headers.get("content-length", "")
    if length.isdigit() and int(length) <= CHUNK:
        data = await resp.read()
        await stream.send("head", status=resp.status, headers=headers, data=data, last=True)
        return
    await stream.send("head", status=resp.status, headers=headers)
    async for chunk in resp.content.iter_any():
        await stream.send_data(chunk)
    await stream.send("end")
