"""The agent's half of gateway tunnels: exec, attach, cp and port-forward over WebSocket.

The API asks for a tunnel (``GatewayRequest.upgrade == "websocket"``, rules in
``schemas.gateway_streams``); this module opens a WebSocket to the Kubernetes API server as the
member (the same impersonation, target and path checks as any other call, made by
``agent.gateway`` before it hands over) and relays messages both ways:

- upstream -> API: each message (split to ``CHUNK``) as a data frame under the stream's credits;
  while there are none, the WebSocket is not read, so the API server's TCP window pushes back;
- API -> upstream: input controls land in a queue of ``INPUT_WINDOW`` (never more: a frame beyond
  the API's credits ends the tunnel), are written upstream, and credits go back in batches;
- an open tunnel counts as activity (auto-sleep), as any open stream does (``agent.gateway``), as vCluster
  Platform does;
- a tunnel ends when either side closes, when the API cancels it, and when nothing at all
  (input, credits, keepalives) has come from the API for ``IDLE_TIMEOUT``.

``websockets`` (asyncio client) does the WebSocket protocol: handshake with extra headers and
subprotocols, TLS with the agent's client certificates, ping/pong, and bounded read queues. Only its
subprotocol check is ours (``KubeClientProtocol``): Kubernetes names port-forward's tunnel
``SPDY/3.1+portforward.k8s.io``, which is not an RFC 6455 token, and websockets refuses the API server's
answer naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, NegotiationError
from websockets.typing import Subprotocol

from agent.gateway import GatewayError
from schemas.gateway import IDLE_TIMEOUT, PING_INTERVAL, GatewayControl, response_headers
from schemas.gateway_streams import INPUT_WINDOW, split_message

if TYPE_CHECKING:
    from agent.gateway import _Stream
    from agent.gateway_upstream import Upstream

logger = logging.getLogger(__name__)

MAX_ERROR_BODY = 64 * 1024
"""Bytes of a refused handshake's answer passed on (a Kubernetes Status)."""
OPEN_TIMEOUT = 30.0
MAX_UPSTREAM_MESSAGE = 1024 * 1024
"""Largest message taken from the API server (its own are 32 KiB)."""
READ_AHEAD = 128
"""Upstream messages read ahead of the stream's credits (4 MiB of the API server's 32 KiB messages)."""


class KubeClientProtocol(ClientProtocol):
    """websockets' client protocol, taking the API server's subprotocol as one of the exact names offered
    (not parsed as an RFC 6455 token list: ``SPDY/3.1+portforward.k8s.io`` is none)."""

    def process_subprotocol(self, headers: Headers) -> Subprotocol | None:
        chosen = [value.strip() for value in headers.get_all("Sec-WebSocket-Protocol")]
        if not chosen:
            return None
        if len(chosen) == 1 and chosen[0] in (self.available_subprotocols or ()):
            return Subprotocol(chosen[0])
        raise NegotiationError(f"the API server chose a subprotocol not offered: {', '.join(chosen)[:200]}")


def kube_connection(offered: tuple[str, ...]) -> type[ClientConnection]:
    """websockets' asyncio client connection over ``KubeClientProtocol``, offering ``offered``.

    ``connect`` refuses such names itself and builds the sans-I/O protocol inside: it becomes ours, with the
    names, before the handshake is written."""

    class KubeConnection(ClientConnection):
        def __init__(self, protocol: ClientProtocol, **options: Any) -> None:
            protocol.__class__ = KubeClientProtocol
            protocol.available_subprotocols = [Subprotocol(p) for p in offered] or None
            super().__init__(protocol, **options)

    return KubeConnection


class Tunnel:
    """One tunnel's input side: what the API sent, waiting to be written upstream."""

    def __init__(self, stream: _Stream) -> None:
        self.stream = stream
        self.inbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=INPUT_WINDOW)
        self.next_seq = 1
        self.last_heard = time.monotonic()
        self.broken = ""
        self.alarm = asyncio.Event()
        self.messages = self.bytes = self.largest = 0

    def heard(self) -> None:
        self.last_heard = time.monotonic()

    def feed(self, control: GatewayControl) -> None:
        """One input frame from the API (called from the subscription: never blocks)."""
        self.heard()
        if self.broken:
            return
        if control.seq != self.next_seq:
            self.fail(f"input frames were lost (expected {self.next_seq}, got {control.seq})")
            return
        self.next_seq += 1
        try:
            self.inbox.put_nowait(control.data)
        except asyncio.QueueFull:
            self.fail("the API sent more input than its credits allow")

    def fail(self, text: str) -> None:
        self.broken = text
        self.alarm.set()

    async def watch(self) -> None:
        """Ends the tunnel when it broke or the API fell silent."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PING_INTERVAL):
                    await self.alarm.wait()
            if self.broken:
                raise GatewayError(400, self.broken)
            if time.monotonic() - self.last_heard > IDLE_TIMEOUT:
                raise GatewayError(504, "the API stopped sending keepalives for this tunnel")

    async def downstream(self, ws: ClientConnection) -> None:
        """Upstream messages to the API, one credit per frame."""
        subprotocol = ws.subprotocol or ""
        async for message in ws:
            data = message.encode() if isinstance(message, str) else message
            self.messages += 1
            self.bytes += len(data)
            self.largest = max(self.largest, len(data))
            for piece in split_message(data, subprotocol):
                await self.stream.send_data(piece)

    async def upstream(self, ws: ClientConnection) -> None:
        """The API's input to the API server, credits back in batches of half a window."""
        written = 0
        while True:
            data = await self.inbox.get()
            await ws.send(data)
            written += 1
            if written >= max(1, INPUT_WINDOW // 2) or self.inbox.empty():
                await self.stream.send("credit", credit=written)
                written = 0


async def serve_tunnel(stream: _Stream, upstream: Upstream, url: str, headers: list[tuple[str, str]]) -> None:
    """Open the member's WebSocket to the API server and relay until either side ends it."""
    tunnel = Tunnel(stream)
    stream.tunnel = tunnel
    ssl = upstream.ssl_context()
    ws_url = "wss://" + url.removeprefix("https://") if url.startswith("https://") else "ws://" + url[len("http://") :]
    try:
        ws = await connect(
            ws_url,
            additional_headers=headers,
            ssl=ssl if ssl else None,
            create_connection=kube_connection(stream.request.subprotocols),
            compression=None,
            user_agent_header=None,  # the client's own User-Agent is among the headers
            proxy=None,
            open_timeout=OPEN_TIMEOUT,
            ping_interval=PING_INTERVAL * 2,
            ping_timeout=PING_INTERVAL * 2,
            max_size=MAX_UPSTREAM_MESSAGE,
            # Read ahead of the credits, up to a bound: kube-apiserver ends an exec whose command exited
            # without waiting for a stdout write blocked on a slow reader (the rest is lost), so the agent keeps
            # reading while the API's client catches up (tests/bench/RESULTS.md, Gateway).
            max_queue=READ_AHEAD,
        )
    except InvalidStatus as exc:
        # The API server refused (RBAC, no such pod, ...): its own answer goes back to the client.
        answer = exc.response
        await stream.send("head", status=answer.status_code, headers=response_headers(list(answer.headers.raw_items())))
        if answer.body:
            await stream.send_data(bytes(answer.body[:MAX_ERROR_BODY]))
        return
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise GatewayError(503, f"cannot open a WebSocket to the Kubernetes API server: {exc}") from None
    try:
        await stream.send("head", status=101, headers=(("sec-websocket-protocol", ws.subprotocol or ""),))
        await first_of(tunnel.watch(), tunnel.downstream(ws), tunnel.upstream(ws))
    except ConnectionClosed as exc:
        logger.info("gateway tunnel %s: the API server's WebSocket closed: %s", stream.request.stream, exc)
    finally:
        await ws.close()
        logger.info(
            "gateway tunnel %s ended: %d messages (%d bytes, largest %d) from the API server, close %s %s",
            stream.request.stream,
            tunnel.messages,
            tunnel.bytes,
            tunnel.largest,
            ws.close_code,
            ws.close_reason,
        )


async def first_of(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run ``jobs`` until the first ends; cancel the rest; its exception, if any, is raised."""
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
