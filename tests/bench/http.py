"""A lean HTTP/1.1 keep-alive client for the benchmark's load.

httpx spends most of a busy client's CPU managing its connection pool (a scan of every connection per
request), so at a few hundred requests a second the benchmark measured its own client. This one keeps a
queue of persistent connections and speaks just enough HTTP/1.1 for the API's JSON answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any


class HttpError(Exception):
    pass


class LeanHttp:
    def __init__(self, host: str, port: int, token: str, size: int = 64) -> None:
        self.host, self.port, self.token = host, port, token
        self.size = size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.gate = asyncio.Semaphore(size)

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port, limit=16 * 1024 * 1024)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        payload = b"" if body is None else json.dumps(body).encode()
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        async with self.gate:
            for attempt in range(2):
                fresh = attempt > 0 or not self.idle
                conn = await self._open() if fresh else self.idle.pop()
                reader, writer = conn
                try:
                    writer.write(head + payload)
                    status, data = await self._response(reader)
                except (OSError, asyncio.IncompleteReadError, HttpError):
                    writer.close()
                    if fresh:
                        raise
                    # A kept-alive connection the server closed while idle (and so, likely, the other idle
                    # ones): once more on a new one.
                    continue
                self.idle.append(conn)
                return status, json.loads(data) if data else None
        raise AssertionError("unreachable")

    @staticmethod
    async def _response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
        line = await reader.readline()
        if not line:
            raise HttpError("connection closed")
        status = int(line.split(b" ", 2)[1])
        length = 0
        chunked = False
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value.strip())
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await reader.readexactly(length) if length else b""
        parts = []
        while True:
            size = int((await reader.readline()).strip(), 16)
            if size == 0:
                await reader.readline()
                return status, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()

    async def close(self) -> None:
        for _reader, writer in self.idle:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        self.idle.clear()
