"""The agent's relay of a plain HTTP answer (agent.gateway_forward) against a real local HTTP server (aiohttp's)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from agent.gateway_forward import ClientPool, close_session, new_session, relay
from agent.gateway_upstream import Upstream
from schemas.gateway import CHUNK

BIG = 3 * 1024 * 1024 + 123


class Frames:
    """Stands in for ``agent.gateway._Stream``: records frames; ``credits`` data frames, then waits for more."""

    def __init__(self, credits: int = 10_000) -> None:
        self.frames: list[tuple[str, dict[str, Any]]] = []
        self.credits = credits
        self.granted = asyncio.Event()

    async def send(self, kind: str, **fields: Any) -> None:
        self.frames.append((kind, fields))

    async def send_data(self, data: bytes) -> None:
        for start in range(0, len(data), CHUNK):
            while self.credits <= 0:
                self.granted.clear()
                await self.granted.wait()
            self.credits -= 1
            await self.send("data", data=data[start : start + CHUNK])

    def body(self) -> bytes:
        return b"".join(f.get("data", b"") for _, f in self.frames)


async def _chunked(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json", "Audit-Id": "x"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    piece = b"y" * 4096  # kube-apiserver's own piece size for a large list
    sent = 0
    while sent < BIG:
        await resp.write(piece[: BIG - sent])
        sent += len(piece[: BIG - sent])
    await resp.write_eof()
    return resp


async def _small(_: web.Request) -> web.Response:
    return web.Response(body=b'{"kind":"Status"}', content_type="application/json")


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = web.Application()
    app.router.add_get("/big", _chunked)
    app.router.add_get("/small", _small)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield Upstream(url=f"http://127.0.0.1:{port}")
    finally:
        await runner.cleanup()


async def _relayed(upstream: Upstream, path: str) -> Frames:
    """The frames ``relay`` sends for a GET of ``path``."""
    pool = ClientPool(new_session, close_session)
    stream = Frames()
    try:
        async with pool.get(upstream).get(upstream.url + path) as resp:
            await relay(stream, resp)  # type: ignore[arg-type]
    finally:
        await pool.close()
    return stream


async def test_a_big_answer_goes_in_frames_of_up_to_chunk_bytes(upstream: Upstream) -> None:
    stream = await _relayed(upstream, "/big")
    kinds = [k for k, _ in stream.frames]
    assert kinds[0] == "head" and kinds[-1] == "end" and set(kinds[1:-1]) == {"data"}
    head = stream.frames[0][1]
    assert head["status"] == 200 and ("audit-id", "x") not in head["headers"]
    assert stream.body() == b"y" * BIG
    sizes = [len(f["data"]) for k, f in stream.frames if k == "data"]
    assert max(sizes) <= CHUNK
    # Pieces of 4 KiB are joined: far fewer frames than pieces.
    assert len(sizes) < BIG // 4096 // 4, len(sizes)


async def test_a_small_answer_is_one_frame(upstream: Upstream) -> None:
    stream = await _relayed(upstream, "/small")
    assert len(stream.frames) == 1
    kind, head = stream.frames[0]
    assert kind == "head" and head["last"] and head["data"] == b'{"kind":"Status"}'


async def test_without_credits_the_answer_is_not_read_ahead_without_bound(upstream: Upstream) -> None:
    pool = ClientPool(new_session, close_session)
    stream = Frames(credits=2)
    try:
        async with pool.get(upstream).get(upstream.url + "/big") as resp:
            task = asyncio.create_task(relay(stream, resp))  # type: ignore[arg-type]
            await asyncio.sleep(0.3)  # the server writes as fast as it is read: give it the chance
            assert not task.done()
            buffered = resp.content.total_bytes - len(stream.body())
            # aiohttp reads at most a couple of buffers ahead; TCP holds the rest at the server.
            assert buffered < 1024 * 1024, buffered
            stream.credits = 10_000
            stream.granted.set()
            await asyncio.wait_for(task, 10)
    finally:
        await pool.close()
    assert stream.body() == b"y" * BIG


async def test_the_pool_keeps_one_client_per_identity_and_closes_them() -> None:
    made: list[str] = []
    closed: list[str] = []

    async def close(name: str) -> None:
        closed.append(name)

    pool: ClientPool[str] = ClientPool(lambda up: made.append(up.url) or up.url, close)
    a, b = Upstream(url="https://a"), Upstream(url="https://b")
    assert pool.get(a) == pool.get(a) == "https://a"
    assert pool.get(b) == "https://b"
    assert made == ["https://a", "https://b"]
    await pool.close()
    assert sorted(closed) == ["https://a", "https://b"]
