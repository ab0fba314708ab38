"""nats-py's client with two fixes, and the small helpers every part of the agent's bus uses."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client
from nats.js.errors import APIError


class PatchedClient(Client):
    """nats-py's client with three fixes, each for a link that looked up and carried nothing.

    PONGs that outlive the flush that asked for them: nats-py 2.16 cancels a
    flush's PONG future when the flush times out (on a slow server: in a
    reconnect, a drain, a close) and later calls ``set_result`` on it when the
    PONG arrives; the ``InvalidStateError`` ends the read loop, and the
    connection then carries nothing in either direction until its pings go
    stale. Seen on 148 of 10,000 agents in the scale benchmark, each one stuck
    on its first request.

    A connect answered with the server's PING before its PONG
    (``_process_connect_init``).

    A reconnect attempt that failed after its handshake (``_connect_to_server``).
    """

    async def _connect_to_server(self, s: Any) -> None:
        """Close what a failed attempt left running before the next one dials.

        nats-py 2.16's reconnect stops the old read loop, pinger and flusher and
        closes the socket once, before its loop of attempts. An attempt whose
        handshake succeeded and whose flush (after the subscriptions) then timed
        out left its own running and its socket open, and the next attempt put a
        new socket under the same transport object: two read loops on one
        connection ("read() called while another coroutine is already waiting
        for incoming data", 63 times in one restart of 10,000 agents)."""
        if self._transport is not None:
            for task in (self._reading_task, self._ping_interval_task, self._flusher_task):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            self._transport.close()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(s)

    async def _process_connect_init(self) -> None:
        """nats-py's handshake, and a connect it left half done made whole.

        The client sends CONNECT and PING and reads one line, taking the link
        as up only if that line is the PONG. nats-server sends its first PING
        (to measure the round trip) 2 s after accepting a connection whose
        first PONG it has not yet sent: when the server took that long over
        the CONNECT, its PING comes first. nats-py 2.16 then returns from
        ``connect`` with the client still *connecting*, so its flusher ends at
        once and its pinger never pings: nothing it publishes is sent, the
        server's PINGs go unanswered, and the server drops the link as stale
        about six minutes later (two missed 2-minute pings). Seen on one agent
        in 10,000 (six minutes to come online, the whole run's tail) and 40 in
        another run, each whose CONNECT the server was 2 s or more behind on.

        The link is taken as up on that PING: the PONG then arrives through the
        read loop, and so would a refusal (``-ERR``), handled as the refusal of a
        link already up is (expired or revoked credentials). Set before anything
        yields, so the flusher the handshake started sees the link up.
        """
        await super()._process_connect_init()
        if self._status == Client.CONNECTING:
            self._status = Client.CONNECTED

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


def redact(url: str) -> str:
    """``url`` without a password or token, fit for logs."""
    try:
        parts = urlsplit(url if "://" in url else f"nats://{url}")
    except ValueError:
        return "<invalid url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, f"***@{host}", parts.path, parts.query, parts.fragment))


def servers_text(servers: list[str]) -> str:
    return ", ".join(redact(s) for s in servers)


def is_auth_error(exc: BaseException | None) -> bool:
    text = str(exc or "").lower()
    return "authorization violation" in text or "authentication expired" in text or "revoked" in text


def api_text(exc: Exception) -> str:
    """What a JetStream API error says, for logs and Unavailable."""
    if isinstance(exc, APIError) and exc.description:
        return str(exc.description)
    return str(exc) or type(exc).__name__
