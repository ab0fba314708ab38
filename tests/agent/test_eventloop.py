"""The agent's event loop keeps every byte a TLS peer sent before it closed, while the agent was not reading.

A Kubernetes API server sends an exec's last output and closes at once; the agent may have paused reading then
(a tunnel's credits spent). On uvloop's own TLS protocol that tail was lost (MagicStack/uvloop#661).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from agent.cli import new_event_loop
from services.platform.tls import TlsFiles, ensure_tls

SENT = 2 * 1024 * 1024
READ_LIMIT = 32 * 1024
"""The client's stream buffer: far below ``SENT``, so its transport is paused while the server finishes."""


class _Server:
    """A TLS server on a thread: per connection it sends ``SENT`` bytes, says close_notify, closes, and sets
    ``closed``."""

    def __init__(self, tls: TlsFiles) -> None:
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(tls.cert, tls.key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="tls-server", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # the listening socket was closed: the test is over
            try:
                self._send(conn)
            except (ssl.SSLError, OSError):
                conn.close()  # a client that refused the certificate
            self.closed.set()

    def _send(self, conn: socket.socket) -> None:
        with self.context.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(b"y" * SENT)
            tls.setblocking(False)
            try:
                tls.unwrap()  # close_notify, without waiting for the peer's (as Go's server does)
            except (ssl.SSLError, OSError):
                pass

    def stop(self) -> None:
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the thread's accept (close alone does not on Linux)
        self.sock.close()
        self.thread.join(timeout=10)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return ensure_tls(tmp_path)


@pytest.fixture
def server(tls: TlsFiles) -> Iterator[_Server]:
    s = _Server(tls)
    yield s
    s.stop()


async def _receive(port: int, context: ssl.SSLContext, closed: threading.Event) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, limit=READ_LIMIT)
    # Read nothing until the server has sent everything and closed: reading is paused all that time.
    assert await asyncio.to_thread(closed.wait, 30), "the server did not finish sending within 30 s"
    received = 0
    while chunk := await reader.read(READ_LIMIT):
        received += len(chunk)
    writer.close()
    return received


def test_tls_tail_is_kept_while_reading_was_paused(server: _Server, tls: TlsFiles) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca))
    with asyncio.Runner(loop_factory=new_event_loop) as run:
        for _ in range(3):
            server.closed.clear()
            assert run.run(_receive(server.port, context, server.closed)) == SENT


def test_tls_still_verifies_the_server(server: _Server) -> None:
    untrusting = ssl.create_default_context()  # the system's CAs: not the test CA that signed the server
    with asyncio.Runner(loop_factory=new_event_loop) as run, pytest.raises(ssl.SSLCertVerificationError):
        run.run(asyncio.open_connection("127.0.0.1", server.port, ssl=untrusting))


def test_tls_checks_the_host_name(server: _Server, tls: TlsFiles) -> None:
    context = ssl.create_default_context(cafile=str(tls.ca))
    with asyncio.Runner(loop_factory=new_event_loop) as run, pytest.raises(ssl.SSLCertVerificationError):
        run.run(asyncio.open_connection("127.0.0.1", server.port, ssl=context, server_hostname="not-this-server"))


def test_the_agent_runs_on_uvloop() -> None:
    loop = new_event_loop()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()
