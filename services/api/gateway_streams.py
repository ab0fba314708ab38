"""The API's half of gateway tunnels: kubectl's exec, attach, cp and port-forward over WebSocket.

The client's WebSocket is admitted like any gateway request (token, no impersonation, project
role, membership, readiness, cluster online: ``Gateway.admit``), audited (an exec is a write),
and handed to the agent as a tunnel (``schemas.gateway_streams``). It is accepted only when the
agent's own WebSocket to the Kubernetes API server is up, with the subprotocol that server
chose; a refusal there (RBAC: exec needs ``create`` on ``pods/exec``; no such pod) reaches the
client as the API server's own answer.

kubectl retries with SPDY after any refused WebSocket, and would print the SPDY refusal instead
of the real reason: the reason is kept for a short while (``RecentRefusals``) and given to that
retry.

Flow control both ways, per tunnel: frames from the agent are granted as the client takes
them (``GatewayStream.consumed``); input goes to the agent only within its credits (the client's
next message is not read meanwhile, and uvicorn stops reading its socket), and a keepalive
goes to the agent every ``PING_INTERVAL`` so it can tell a quiet tunnel from a lost API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from typing import TYPE_CHECKING

from fastapi import FastAPI, WebSocket
from fastapi.responses import Response
from starlette.websockets import WebSocketDisconnect

from schemas.errors import TetherError
from schemas.gateway import IDLE_TIMEOUT, PING_INTERVAL, GatewayControl
from schemas.gateway_streams import INPUT_WINDOW, carried_subprotocols, split_message
from services.api.gateway import PREFIX, Gateway, Refused, _audit, forward_request, refusal_of, status
from services.api.gateway_holds import AccessEnded
from services.bus.gateway import GatewayStream, StreamBroken

if TYPE_CHECKING:
    from services.api.auth import Platform

logger = logging.getLogger(__name__)

REFUSAL_TTL = 30.0
"""Seconds a refused WebSocket's reason is kept for the client's SPDY retry."""
MAX_REFUSALS = 1000


class RecentRefusals:
    """Why a member's WebSocket was refused, by (user, path and query), for a little while."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, str], tuple[float, int, str]] = OrderedDict()

    def remember(self, user: str, where: str, code: int, message: str) -> None:
        self._items[(user, where)] = (time.monotonic() + REFUSAL_TTL, code, message)
        self._items.move_to_end((user, where))
        while len(self._items) > MAX_REFUSALS:
            self._items.popitem(last=False)

    def recall(self, user: str, where: str) -> Refused | None:
        hit = self._items.get((user, where))
        if hit is None or hit[0] < time.monotonic():
            return None
        return Refused(hit[1], hit[2])


def status_message(body: bytes, code: int) -> str:
    """The ``message`` of a Kubernetes Status answer, else a plain description."""
    try:
        found = json.loads(body)
    except ValueError:
        found = None
    if isinstance(found, dict) and isinstance(found.get("message"), str):
        return str(found["message"])[:1000]
    return f"the Kubernetes API server refused the WebSocket ({code})"


class Tunnel:
    """One accepted client WebSocket and its stream to the agent."""

    def __init__(self, gateway: Gateway, websocket: WebSocket, stream: GatewayStream, subprotocol: str) -> None:
        self.gateway = gateway
        self.websocket = websocket
        self.stream = stream
        self.subprotocol = subprotocol
        self.credits = INPUT_WINDOW
        self.credited = asyncio.Event()
        self.seq = 0
        self.ended = False
        stream.on_credit = self.grant

    def grant(self, credit: int) -> None:
        self.credits = min(self.credits + max(0, credit), INPUT_WINDOW)
        self.credited.set()

    async def run(self) -> None:
        jobs = [asyncio.ensure_future(j) for j in (self.downstream(), self.upstream(), self.keepalive())]
        try:
            done, _ = await asyncio.wait(jobs, return_when=asyncio.FIRST_COMPLETED)
            for job in done:
                logger.info("gateway tunnel %s: %s ended first (%r)", self.stream.id, job.get_coro(), job.exception())
        finally:
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            if self.ended:
                self.gateway.link.forget(self.stream.id)
            else:
                self.gateway.cancel_later(self.stream)

    async def downstream(self) -> None:
        """The agent's frames to the client, credits granted as it takes them."""
        code, reason = 1000, ""
        try:
            while True:
                frame = await self.stream.next(IDLE_TIMEOUT)
                if frame.kind == "data":
                    await self.websocket.send_bytes(frame.data)
                    await self.stream.consumed(frame)
                    continue
                self.ended = True
                if frame.kind == "error":
                    code, reason = 1011, frame.error[:120]
                return
        except AccessEnded as exc:
            code, reason = 1008, str(exc)[:120]  # policy violation: the member may no longer be here
        except StreamBroken as exc:
            code, reason = 1011, str(exc)[:120]
        except (WebSocketDisconnect, RuntimeError, OSError):
            return
        finally:
            logger.info("gateway tunnel %s: closing the client's WebSocket (%d %s)", self.stream.id, code, reason)
            await self._close(code, reason)

    async def _close(self, code: int, reason: str) -> None:
        try:
            await self.websocket.close(code, reason)
        except (RuntimeError, OSError, WebSocketDisconnect):
            pass  # already closed by the client

    async def upstream(self) -> None:
        """The client's messages to the agent, within the agent's credits."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is None:
                data = str(message.get("text") or "").encode()
            for piece in split_message(data, self.subprotocol):
                while self.credits <= 0:
                    self.credited.clear()
                    await self.credited.wait()
                self.credits -= 1
                self.seq += 1
                control = GatewayControl(stream=self.stream.id, seq=self.seq, data=piece)
                await self.gateway.link.control(self.stream.cluster, control)

    async def keepalive(self) -> None:
        while True:
            await asyncio.sleep(PING_INTERVAL)
            await self.gateway.link.control(self.stream.cluster, GatewayControl(stream=self.stream.id))


def install_tunnels(app: FastAPI, platform: Platform, gateway: Gateway) -> None:
    async def tunnel(websocket: WebSocket, project: str, target: str, name: str, path: str) -> None:
        user, where = "", ""
        try:
            holder, access, kube_path = await gateway.admit(websocket, project, target, name)
            user, where = holder.user, f"{kube_path}?{websocket.url.query}"
            offered = carried_subprotocols(list(websocket.scope.get("subprotocols") or []))
            if not offered:
                raise Refused(
                    400, "no WebSocket subprotocol the gateway carries (v5.channel.k8s.io and older, port-forward)"
                )
            forward = forward_request(access, websocket, kube_path, "GET", upgrade="websocket", subprotocols=offered)
            try:
                stream, head = await gateway.open(access, forward)
            except Refused as exc:
                await _audit(platform, access, forward, str(exc.code))
                raise
            await _audit(platform, access, forward, str(head.status))
        except (Refused, TetherError) as exc:
            if isinstance(exc, TetherError):
                exc = refusal_of(exc)
            logger.info("gateway: WebSocket %s refused (%d): %s", websocket.url.path, exc.code, exc.message)
            if user:
                gateway.refusals.remember(user, where, exc.code, exc.message)
            await websocket.send_denial_response(status(exc.code, exc.message, exc.retry_after))
            return
        if head.status != 101:
            await _deny(gateway, websocket, stream, head.status, dict(head.headers), user, where)
            return
        chosen = dict(head.headers).get("sec-websocket-protocol") or None
        await websocket.accept(subprotocol=chosen)
        gateway.holds.hold(holder, stream, f"GET {kube_path}")  # it ends with its member's access (``gateway_holds``)
        try:
            await Tunnel(gateway, websocket, stream, chosen or "").run()
        finally:
            gateway.holds.release(stream)

    app.add_api_websocket_route(f"{PREFIX}/{{project}}/{{target}}/{{name}}/{{path:path}}", tunnel)


async def _deny(
    gateway: Gateway,
    websocket: WebSocket,
    stream: GatewayStream,
    code: int,
    headers: dict[str, str],
    user: str,
    where: str,
) -> None:
    """The API server's refusal of the handshake, as it gave it (and kept for the SPDY retry)."""
    body = b""
    try:
        while len(body) < 64 * 1024:
            frame = await stream.next(IDLE_TIMEOUT)
            if frame.kind != "data":
                break
            body += frame.data
            await stream.consumed(frame)
    except StreamBroken:
        pass
    await stream.close(cancel=False)
    logger.info("gateway: the API server refused the WebSocket %s (%d): %s", where, code, body[:300])
    gateway.refusals.remember(user, where, code, status_message(body, code))
    kept = {k: v for k, v in headers.items() if k in ("content-type", "cache-control")}
    await websocket.send_denial_response(Response(body, status_code=code, headers=kept))
