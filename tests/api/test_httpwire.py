"""The API's HTTP protocol sends each response's head and body in one write (``services.api.httpwire``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvicorn

from services.api.httpwire import FLUSH_AT, OneWriteHttpProtocol, OneWriteTransport

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Recorder:
    """A transport that records what is written to it (uvloop's transports take no attributes)."""

    def __init__(self, transport: Any) -> None:
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


RECORDERS: list[Recorder] = []


class RecordingProtocol(OneWriteHttpProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        recorder = Recorder(transport)
        RECORDERS.append(recorder)
        super().connection_made(recorder)  # type: ignore[arg-type]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for chunk in (b"one", b"two"):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await asyncio.sleep(0.01)  # the application yields between chunks: each leaves on its own
        await send({"type": "http.response.body", "body": b""})
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[int]:
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=RecordingProtocol, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(10):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


async def exchange(port: int, path: str, count: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    try:
        for _ in range(count):
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if b"content-length" in head.lower():
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                answers.append(head + await reader.readexactly(length))
            else:
                answers.append(head + await reader.readuntil(b"0\r\n\r\n"))
    finally:
        writer.close()
    return answers


async def test_a_response_leaves_in_one_write_each_on_a_kept_alive_connection() -> None:
    RECORDERS.clear()
    async with serving() as port:
        answers = await exchange(port, "/", count=3)
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b'{"ok":true}') for a in answers)
    (recorder,) = RECORDERS
    assert recorder.writes == answers  # head and body together, once per response


async def test_a_streamed_body_still_leaves_chunk_by_chunk() -> None:
    RECORDERS.clear()
    async with serving() as port:
        (answer,) = await exchange(port, "/stream")
    assert b"3\r\none\r\n" in answer and b"3\r\ntwo\r\n" in answer
    (recorder,) = RECORDERS
    assert len(recorder.writes) >= 3  # the head with the first chunk, the second chunk, the end
    assert b"".join(recorder.writes) == answer


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def one_turn() -> None:
    await asyncio.sleep(0)


@pytest.fixture
async def fake() -> tuple[FakeTransport, OneWriteTransport]:
    transport = FakeTransport()
    return transport, OneWriteTransport(transport, asyncio.get_running_loop())  # type: ignore[arg-type]


async def test_writes_of_one_turn_are_sent_together_at_the_next(fake: tuple[FakeTransport, OneWriteTransport]) -> None:
    transport, wire = fake
    wire.write(b"head")
    wire.writelines([b"-", memoryview(b"body")])
    assert transport.writes == [] and wire.get_write_buffer_size() == 9
    await one_turn()
    assert transport.writes == [b"head-body"]
    wire.write(b"")
    await one_turn()
    assert transport.writes == [b"head-body"]


async def test_a_large_write_is_not_held(fake: tuple[FakeTransport, OneWriteTransport]) -> None:
    transport, wire = fake
    wire.write(b"h")
    wire.write(b"x" * FLUSH_AT)
    assert transport.writes == [b"h" + b"x" * FLUSH_AT]
    await one_turn()
    assert len(transport.writes) == 1


async def test_close_sends_what_was_written_first_and_abort_drops_it(
    fake: tuple[FakeTransport, OneWriteTransport],
) -> None:
    transport, wire = fake
    wire.write(b"last words")
    wire.close()
    assert transport.writes == [b"last words"] and transport.closed
    await one_turn()  # the scheduled flush finds nothing
    assert transport.writes == [b"last words"]

    other = FakeTransport()
    wire = OneWriteTransport(other, asyncio.get_running_loop())  # type: ignore[arg-type]
    wire.write(b"never")
    wire.abort()
    await one_turn()
    assert other.writes == [] and other.aborted


async def test_everything_else_is_the_transports(fake: tuple[FakeTransport, OneWriteTransport]) -> None:
    _transport, wire = fake
    assert wire.get_extra_info("peername") == "info:peername"
    assert not wire.is_closing()
