"""A bound on request bodies at the API's edge: a body over the limit is a 413 before anything reads it."""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.api import MAX_BODY


def rest_route(path: str) -> bool:
    """The JSON REST routes (bodies of a few kilobytes); the Kubernetes gateway streams and has its own rules."""
    return path.startswith("/api/") and "/gateway" not in path and "/kube" not in path


class BodyLimit:
    """Pure ASGI: refuse a body over ``limit`` bytes with 413, by its Content-Length or, without one (chunked),
    by counting it while it is read into memory (at most ``limit`` bytes are ever held)."""

    def __init__(self, inner: ASGIApp, limit: int = MAX_BODY, applies: Callable[[str], bool] = rest_route) -> None:
        self.inner = inner
        self.limit = limit
        self.applies = applies

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.applies(scope["path"]):
            await self.inner(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.limit:
                await self._refuse(send)
                return
            await self.inner(scope, receive, send)
            return
        body, more, held = b"", True, []
        while more:
            message = await receive()
            if message["type"] != "http.request":
                held.append(message)
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                await self._refuse(send)
                return
        replay: list[Message] = [{"type": "http.request", "body": body, "more_body": False}, *held]

        async def replayed() -> Message:
            return replay.pop(0) if replay else await receive()

        await self.inner(scope, replayed, send)

    async def _refuse(self, send: Send) -> None:
        payload = json.dumps(
            {"error": {"code": "413", "message": f"request body too large: at most {self.limit} bytes"}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})
