"""nats-py's client with its fixes, and the small helpers every part of the agent's bus uses."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import PING_PROTO, Client
from nats.js.errors import APIError

from schemas.errors import describe

HANDSHAKE_TIMEOUT = 15
"""Seconds the handshake may wait for the server's INFO and for its answer to CONNECT (the TCP connect keeps the
dialer's shorter ``connect_timeout``). A server busy with a fleet's reconnects answers late, not never: read loops
3-16 s behind in a restart of 10,000 agents. A handshake given up is a connection the server authenticates all
the same, and one more that the agent dials."""
RECONNECT_FLUSH_TIMEOUT = 30
"""Seconds the flush that ends a reconnect attempt (after the subscriptions are sent again) may wait; nats-py's is
10 s. In a restart of 10,000 agents thousands of links that had just come back gave up on that flush when the
server was more than 10 s behind, and dialled again: 8,364 connections more than agents (0.84 each), the second
wave starting ~40 s after NATS started, when the first was nearly over."""


class PatchedClient(Client):
    """nats-py's client with four fixes: three for a link that looked up and carried nothing, one for a flush.

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

    A flush that returned before the server read what was sent ahead of it
    (``_send_ping``).

    And for what is still unknown, a reconnect that stopped trying is started
    again (``restart_reconnect``, by ``agent.bus.watchdog``).

    Beside the fixes, patience with a busy server: the handshake and the flush
    that ends a reconnect wait longer than nats-py's defaults
    (``HANDSHAKE_TIMEOUT``, ``RECONNECT_FLUSH_TIMEOUT``).
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
        dial_timeout = self.options["connect_timeout"]
        self.options["connect_timeout"] = max(dial_timeout, HANDSHAKE_TIMEOUT)
        try:
            await super()._process_connect_init()
        finally:
            self.options["connect_timeout"] = dial_timeout
        if self._status == Client.CONNECTING:
            self._status = Client.CONNECTED

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        """A PING behind everything already buffered, so its PONG proves the server read them.

        nats-py 2.16 writes a flush's PING straight to the socket while the
        commands before it (a SUB, a PUB) still wait in the buffer for the
        flusher task: the PONG can come back before the server saw them, and
        a subscription the agent flushed could miss a message sent to it at
        once. Queued in order, as nats.go does."""
        self._pongs.append(future if future is not None else asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()

    async def flush(self, timeout: int = 10) -> None:
        """nats-py's flush; the one that ends a reconnect attempt waits ``RECONNECT_FLUSH_TIMEOUT``."""
        if self._reconnection_task is not None and self._reconnection_task is asyncio.current_task():
            timeout = max(timeout, RECONNECT_FLUSH_TIMEOUT)
        await super().flush(timeout)

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0

    def restart_reconnect(self) -> None:
        """Start nats-py's reconnect again from the top (``agent.bus.watchdog``: it stopped trying)."""
        if self.is_closed:
            return
        stuck = self._reconnection_task
        if stuck is not None and not stuck.done():
            stuck.cancel()
        self._status = Client.RECONNECTING
        self._ps.reset()
        self._reconnection_task = asyncio.get_running_loop().create_task(self._attempt_reconnect())

    def link_state(self) -> str:
        """What nats-py's link is doing, for the log line of a link found stuck."""
        return (
            f"status {self._status}, reconnect {_task_state(self._reconnection_task)}, "
            f"read loop {_task_state(self._reading_task)}, pinger {_task_state(self._ping_interval_task)}, "
            f"flusher {_task_state(self._flusher_task)}, pings out {self._pings_outstanding}, "
            f"PONGs awaited {len(self._pongs)}, {self._pending_data_size} bytes pending, "
            f"reconnects {self.stats['reconnects']}, last error {self.last_error!r}"
        )


def _task_state(task: asyncio.Task[Any] | None) -> str:
    if task is None:
        return "none"
    if not task.done():
        frames = task.get_stack(limit=8)
        where = " < ".join(f"{f.f_code.co_name}:{f.f_lineno}" for f in reversed(frames))
        return f"running ({where or '?'})"
    if task.cancelled():
        return "cancelled"
    exc = task.exception()
    return f"ended ({exc!r})" if exc is not None else "ended"


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
    return describe(exc)
