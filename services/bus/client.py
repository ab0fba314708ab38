"""nats-py's client with the four fixes the agent's bus has too (``agent.bus.client``). Three are for a link
that looked up and carried nothing: a service on such a link answers nobody and is never restarted, because
its connection is not closed. The fourth makes a flush prove the server read what was sent before it.

The two runtimes never import each other (import-linter), so each holds its own few lines of them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import PING_PROTO, Client


class LinkClient(Client):
    """nats-py's client whose handshake, PONGs and failed reconnects cannot leave it half connected, and
    whose flush is a barrier."""

    async def _send_ping(self, future: asyncio.Future[Any] | None = None) -> None:
        """A PING behind everything already buffered, so its PONG proves the server read them. nats-py 2.16
        writes a flush's PING straight to the socket while the commands before it wait in the buffer for the
        flusher task: a service whose start flushed after subscribing was, now and then, not yet subscribed
        when it said it was ready (a request sent at once found no responders; seen once in CI). Queued in
        order, as nats.go does."""
        self._pongs.append(future if future is not None else asyncio.get_running_loop().create_future())
        await self._send_command(PING_PROTO)
        await self._flush_pending()

    async def _connect_to_server(self, s: Any) -> None:
        """nats-py 2.16 stops the old read loop, pinger and flusher once per reconnect, not per attempt: an
        attempt whose flush timed out after its handshake left them running on its open socket, and the next
        attempt put a new socket under the same transport (two read loops: "read() called while another
        coroutine is already waiting"). Stopped and closed here, before each dial."""
        if self._transport is not None:
            for task in (self._reading_task, self._ping_interval_task, self._flusher_task):
                if task is not None and task is not asyncio.current_task():
                    task.cancel()
            self._transport.close()  # type: ignore[no-untyped-call]
        await super()._connect_to_server(s)

    async def _process_connect_init(self) -> None:
        """nats-py's handshake, and a connect it left half done made whole.

        nats-py reads one line after its CONNECT and PING and takes the link as up only if it is the PONG.
        nats-server sends its first PING 2 s after accepting a connection whose first PONG it has not yet
        sent, so a server that takes that long over the CONNECT (busy with a restart's reconnects) answers
        with its PING first. nats-py 2.16 then returns with the client still *connecting*: its flusher ends
        at once, its pinger never pings, nothing it publishes is sent, and the server drops the link as stale
        minutes later (two missed 2-minute pings). Taken as up on that PING instead; the PONG, or a refusal
        (``-ERR``), then arrives through the read loop. Set before anything yields, so the flusher the
        handshake started sees the link up."""
        await super()._process_connect_init()
        if self._status == Client.CONNECTING:
            self._status = Client.CONNECTED

    async def _process_pong(self) -> None:
        """A PONG for a flush that timed out: nats-py 2.16 sets the result of the future the flush
        cancelled, and the ``InvalidStateError`` ends its read loop (the link then carries nothing)."""
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0
