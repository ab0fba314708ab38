"""One agent's NATS connection: publish, request, subscribe, stream publish, close.

An agent must never give up on the platform: the first connect (``agent.bus.dial``)
and every reconnect retry forever, with jittered exponential backoff so that
thousands of agents that lost the same server do not all come back in the same
instant. Every nats-py failure leaves this module as ``Unavailable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from agent.bus.client import PatchedClient, api_text, redact
from agent.bus.dial import Dialer
from agent.bus.events import Hook, LinkEvents
from agent.bus.messages import NatsIdentity, Published, Subscription
from agent.bus.watchdog import LinkWatchdog
from agent.settings import AgentSettings
from schemas import tracing
from schemas.errors import RETRY_AFTER_HEADER, NoReply, NoResponders, Unavailable, describe, from_wire
from schemas.messages import M, Message, decode, encode

logger = logging.getLogger(__name__)

ERROR_CODE = "Nats-Service-Error-Code"
ERROR_TEXT = "Nats-Service-Error"


class Connection:
    """One agent's NATS connection, with hooks for disconnects and reconnects (``LinkEvents``)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._nc: Client | None = None
        self._inbox_prefix: str | None = None
        self.events = LinkEvents(name)
        self.events.connected_url = lambda: self.connected_url
        self._up = asyncio.Event()
        """Set while the link is up: from the first connect, cleared at a drop, set again at the reconnect."""
        self.events.on_disconnected.append(self._up.clear)
        self.events.on_reconnected.append(self._up.set)
        self._next_relink = asyncio.Event()
        """Set at the next reconnect, then replaced (``relinked``)."""
        self.events.on_reconnected.append(self._relinked_now)
        self.watchdog = LinkWatchdog(self.events, self._patched, lambda: self._up.is_set() and self.is_connected)
        """Starts the reconnect again when nats-py stops trying (``agent.bus.watchdog``)."""
        self.events.on_disconnected.append(self.watchdog.link_down)

    def _patched(self) -> PatchedClient | None:
        return self._nc if isinstance(self._nc, PatchedClient) else None

    @property
    def refused(self) -> asyncio.Event:
        """Set when the broker keeps refusing our credentials (revoked or expired): stop for good."""
        return self.events.refused

    @property
    def lost(self) -> asyncio.Event:
        """Set when the server closed the connection for good: the agent must stop, and be restarted."""
        return self.events.lost

    def _relinked_now(self) -> None:
        done, self._next_relink = self._next_relink, asyncio.Event()
        done.set()

    async def relinked(self) -> None:
        """Until the link is next made again (a reconnect after this call began)."""
        await self._next_relink.wait()

    def on_reconnected(self, hook: Hook) -> None:
        """Call ``hook`` after every successful reconnect (subscriptions are already restored)."""
        self.events.on_reconnected.append(hook)

    def on_disconnected(self, hook: Hook) -> None:
        """Call ``hook`` whenever the link drops (not when we close it)."""
        self.events.on_disconnected.append(hook)

    async def open(self, settings: AgentSettings, identity: NatsIdentity | None = None) -> None:
        """Connect, retrying forever with jittered backoff (``Dialer.dial``)."""
        self._nc = await Dialer(settings, self.events, identity, self._inbox_prefix).dial()
        self.events.established = True
        self._up.set()
        logger.info("nats (%s): connected to %s", self.name, self.connected_url or "?")

    async def force_reconnect(self) -> None:
        """Reconnect now (e.g. to present renewed credentials before the old ones expire)."""
        if self._nc is not None and self._nc.is_connected:
            await self._nc.force_reconnect()

    # --- state ------------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._nc is None:
            raise Unavailable("not connected to NATS yet")
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def linked(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the link to be up; whether it is. A request made while it is down waits
        its whole timeout for nothing (nats-py buffers it, the answer cannot come), and a caller that counts
        that as the service's slowness backs off further with every attempt of a long outage."""
        if self.is_connected:
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._up.wait()
        return self.is_connected

    @property
    def connected_url(self) -> str | None:
        if self._nc is None or self._nc.connected_url is None:
            return None
        return redact(self._nc.connected_url.geturl())

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream()

    # --- messaging ------------------------------------------------------------------------
    async def publish(self, subject: str, message: Message) -> None:
        """Core-NATS publish with trace headers; Unavailable when the client refuses it.

        While the link is down nats-py buffers (up to its pending limit) and flushes on reconnect.
        """
        await self.publish_bytes(subject, encode(message), tracing.inject())

    async def publish_bytes(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Core-NATS publish of bytes already encoded (the Kubernetes gateway's frames)."""
        try:
            await self.client.publish(subject, data, headers=headers or None)
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {describe(exc)}") from None

    async def request(self, subject: str, message: Message, reply_type: type[M], timeout: float) -> M:
        return await request(self, subject, message, reply_type, timeout)

    async def subscribe(self, subject: str) -> Subscription:
        try:
            return Subscription(await self.client.subscribe(subject))
        except NatsError as exc:
            raise Unavailable(f"cannot subscribe to {subject}: {describe(exc)}") from None

    async def js_publish(
        self, subject: str, message: Message, *, msg_id: str | None = None, timeout: float = 5.0
    ) -> Published:
        """Publish into a stream and wait for its acknowledgement; one attempt.

        ``msg_id`` becomes ``Nats-Msg-Id``: the stream drops a second message with the same
        id inside its duplicate window, so a retry after a lost acknowledgement is harmless.
        Raises Unavailable for everything that may pass: no stream (yet), a timeout, a 503
        during a leader election, a link that is down.
        """
        headers = tracing.inject()
        if msg_id:
            headers[Header.MSG_ID] = msg_id
        try:
            ack = await self.client.jetstream().publish(
                subject, encode(message), timeout=timeout, headers=headers or None
            )
        except NoStreamResponseError:
            raise Unavailable(f"no stream stores {subject} (not created yet, or JetStream is down)") from None
        except NatsTimeout:
            raise Unavailable(f"no acknowledgement for {subject} within {timeout:g}s") from None
        except ServiceUnavailableError:
            raise Unavailable(f"JetStream is unavailable (503) for {subject}") from None
        except APIError as exc:
            raise Unavailable(f"JetStream refused {subject}: {api_text(exc)}") from None
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {describe(exc)}") from None
        return Published(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))

    # --- closing ------------------------------------------------------------------------------
    async def close(self, timeout: float = 5.0, *, drain: bool = True) -> None:
        """Drain (let in-flight messages go out), then close; bounded by ``timeout``. Safe twice.

        ``drain=False``: close at once, for a link with nothing in flight (the bootstrap user's, once its one
        call is answered): a drain costs a round trip to the server (unsubscribe, PING, PONG)."""
        nc, self._nc = self._nc, None
        self.events.closing = True
        await self.watchdog.stop()
        if nc is None or nc.is_closed:
            return
        try:
            if drain and nc.is_connected:
                await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, NatsError) as exc:
            logger.debug("nats (%s): drain: %s", self.name, describe(exc))
        finally:
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()


async def connect(
    settings: AgentSettings,
    name: str,
    *,
    identity: NatsIdentity | None = None,
    on_reconnected: Hook | None = None,
    on_disconnected: Hook | None = None,
    inbox_prefix: str | None = None,
) -> Connection:
    """A connection to ``settings.server`` as client ``name``; waits (forever) until the first connect.

    ``inbox_prefix``: where replies come when there is no ``identity`` (an open NATS)."""
    conn = Connection(name)
    conn._inbox_prefix = inbox_prefix
    if on_reconnected is not None:
        conn.on_reconnected(on_reconnected)
    if on_disconnected is not None:
        conn.on_disconnected(on_disconnected)
    await conn.open(settings, identity)
    return conn


async def request(conn: Connection, subject: str, message: Message, reply_type: type[M], timeout: float = 5.0) -> M:
    """Request/reply with a typed answer.

    A service's error reply is raised as its ``TetherError`` kind (``from_wire``);
    no responders raise ``NoResponders``, a timeout ``NoReply``, a link that is down ``Unavailable``.
    """
    try:
        msg = await conn.client.request(subject, encode(message), timeout=timeout, headers=tracing.inject())
    except NoRespondersError:
        raise NoResponders(f"no service answers on {subject}") from None
    except NatsTimeout:
        raise NoReply(f"no reply on {subject} within {timeout:g}s") from None
    except NatsError as exc:
        raise Unavailable(f"request on {subject} failed: {describe(exc)}") from None
    headers = msg.headers or {}
    if ERROR_CODE in headers:
        raise from_wire(headers[ERROR_CODE], headers.get(ERROR_TEXT, ""), headers.get(RETRY_AFTER_HEADER))
    return decode(msg.data, reply_type)
