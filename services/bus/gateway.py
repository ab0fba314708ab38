"""The API's side of the Kubernetes gateway's bus traffic (``schemas.gateway``).

One subscription per API process (``tether.gwr.*.<api>.*``) receives the answer
frames of every stream this process opened, and hands each to its stream's
bounded queue. The broker guarantees that frames under ``tether.gwr.<cluster>``
come from that cluster's agent; the link also checks that the cluster matches
the stream's, and that the agent keeps to its credits (a frame beyond them ends
the stream: nothing here grows without bound).

A request carries its stream's frames subject as its reply subject: when no agent is subscribed (not connected,
or not serving yet), nats-server answers there at once with a no-responders status, and the stream ends with
``NoAgent`` instead of waiting for a head that cannot come. After this process's own reconnect, every open
stream ends (frames and controls sent meanwhile are lost; the agent ends its side on its own reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from schemas import subjects, tracing
from schemas.errors import TetherError, Unavailable, describe
from schemas.gateway import GatewayControl, GatewayFrame, GatewayRequest, decode, encode
from services.bus.interface import Bus
from services.bus.limits import GuardedClient

logger = logging.getLogger(__name__)

NO_RESPONDERS = "503"
"""nats-server's status for a request nobody is subscribed to."""


class StreamBroken(Exception):
    """The stream cannot go on (agent gone, frames lost, protocol broken); the text says why."""


class NoAgent(StreamBroken):
    """Nobody serves the cluster's gateway subject: its agent is not connected (nats-server said so)."""

    def __init__(self, cluster: str) -> None:
        super().__init__(f"cluster {cluster!r} is offline: its agent is not connected to the platform")


class GatewayStream:
    """One request's answer, frame by frame, with credits granted as the caller consumes."""

    def __init__(self, link: GatewayLink, cluster: str, stream_id: str, window: int) -> None:
        self.link = link
        self.cluster = cluster
        self.id = stream_id
        self.window = window
        # head + window data frames + end/error: the agent can never fill it while it keeps to its credits.
        self._queue: asyncio.Queue[GatewayFrame | StreamBroken] = asyncio.Queue(maxsize=window + 3)
        self._seq = 0
        self._consumed = 0
        self.last_heard = time.monotonic()
        self.closed = False
        self.on_credit: Callable[[int], None] | None = None
        """A tunnel's input credits from the agent (``schemas.gateway_streams``)."""

    def deliver(self, frame: GatewayFrame) -> None:
        """From the subscription: queue one frame (pings only refresh ``last_heard``)."""
        self.last_heard = time.monotonic()
        if frame.kind == "credit" and self.on_credit is not None and not self.closed:
            self.on_credit(frame.credit)
            return
        if frame.kind in ("ping", "credit") or self.closed:
            return
        if frame.seq != self._seq + 1:
            self.fail(f"frames of the answer were lost (expected {self._seq + 1}, got {frame.seq})")
            return
        self._seq = frame.seq
        try:
            self._queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.fail("the agent sent more than its credits allow")

    def fail(self, text: str, error: StreamBroken | None = None) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueEmpty):
            while True:
                self._queue.get_nowait()
        self._queue.put_nowait(error or StreamBroken(text))

    async def next(self, timeout: float) -> GatewayFrame:
        """The next frame; StreamBroken when the agent fell silent for ``timeout`` s or the stream broke."""
        while True:
            try:
                async with asyncio.timeout(timeout):
                    item = await self._queue.get()
            except TimeoutError:
                if time.monotonic() - self.last_heard < timeout:
                    continue  # pings keep arriving: a quiet watch, not a lost agent
                raise StreamBroken(f"the agent of cluster {self.cluster!r} stopped answering") from None
            if isinstance(item, StreamBroken):
                raise item
            return item

    async def consumed(self, frame: GatewayFrame) -> None:
        """The caller has passed ``frame`` on: grant credits back in batches of half a window."""
        if frame.kind != "data":
            return
        self._consumed += 1
        if self._consumed >= max(1, self.window // 2):
            credit, self._consumed = self._consumed, 0
            await self.link.control(self.cluster, GatewayControl(stream=self.id, credit=credit))

    async def close(self, *, cancel: bool) -> None:
        """Forget the stream; with ``cancel`` tell the agent to stop the upstream call."""
        self.closed = True
        self.link.forget(self.id)
        if cancel:
            with contextlib.suppress(TetherError):
                await self.link.control(self.cluster, GatewayControl(stream=self.id, cancel=True))


class GatewayLink:
    """This API process's gateway traffic: requests and controls out, frames in."""

    def __init__(self, nc: Client | None, api_id: str | None = None) -> None:
        self.nc = nc
        self.api_id = api_id or secrets.token_hex(6)
        self._numbers = itertools.count(1)
        self._streams: dict[str, GatewayStream] = {}
        self._sub: Subscription | None = None

    @property
    def open_streams(self) -> int:
        return len(self._streams)

    async def start(self) -> None:
        if self.nc is None:
            raise Unavailable("the Kubernetes gateway needs the platform on NATS")
        self._sub = await self.nc.subscribe(subjects.gateway_frames_for_api(self.api_id), cb=self._on_frame)
        if isinstance(self.nc, GuardedClient):
            self.nc.reconnected_hooks.append(self.reset)

    def reset(self) -> None:
        """After a reconnect: end every open stream (a tunnel's client sees a close, a watch's kubectl re-lists)."""
        for stream in list(self._streams.values()):
            stream.fail("the platform's link to NATS was interrupted: the stream ended")

    async def _on_frame(self, msg: Msg) -> None:
        where = subjects.parse_gateway_frames(msg.subject)
        stream = self._streams.get(where[1]) if where else None
        if stream is None or where is None:
            return  # a stream already closed: its late frames are dropped
        if where[0] != stream.cluster:
            logger.warning("gateway: a frame for stream %s came from cluster %r; dropped", stream.id, where[0])
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == NO_RESPONDERS:
            stream.fail("", NoAgent(stream.cluster))
            return
        try:
            message = decode(msg.data)
        except TetherError as exc:
            stream.fail(f"the agent sent an unreadable frame: {exc.description}")
            return
        if not isinstance(message, GatewayFrame):
            stream.fail("the agent sent something else than a frame")
            return
        stream.deliver(message)

    def open(self, cluster: str, window: int) -> GatewayStream:
        stream_id = f"{self.api_id}.{next(self._numbers)}"
        stream = GatewayStream(self, cluster, stream_id, window)
        self._streams[stream_id] = stream
        return stream

    def forget(self, stream_id: str) -> None:
        self._streams.pop(stream_id, None)

    async def request(self, cluster: str, request: GatewayRequest) -> None:
        reply = subjects.gateway_frames(cluster, request.stream)  # where nats-server says "no responders"
        await self._publish(subjects.gateway_requests(cluster), encode(request), tracing.inject(), reply)

    async def control(self, cluster: str, control: GatewayControl) -> None:
        await self._publish(subjects.gateway_control(cluster), encode(control), None)

    async def _publish(self, subject: str, data: bytes, headers: dict[str, str] | None, reply: str = "") -> None:
        if self.nc is None:
            raise Unavailable("the Kubernetes gateway needs the platform on NATS")
        try:
            await self.nc.publish(subject, data, reply=reply, headers=headers or None)
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {describe(exc)}") from None

    async def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(NatsError):
                await sub.unsubscribe()


def link_over(bus: Bus, api_id: str | None = None) -> GatewayLink:
    """The gateway link of the API process running on ``bus``, over its NATS connection (frames are many
    and small: they go out without the flush each ``Bus.send`` waits for)."""
    from services.bus.nats_bus import NatsBus  # the link speaks NATS itself; the in-memory bus has none

    return GatewayLink(bus._nc if isinstance(bus, NatsBus) else None)
