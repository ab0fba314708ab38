"""The agent's link to the platform: the only agent module that imports ``nats``.

An agent must never give up on the platform: the first connect and every
reconnect retry forever, with jittered exponential backoff so that thousands
of agents that lost the same server do not all come back in the same instant.

nats-py (2.16) retries a failed *first* connect on its own, forever and at a
fixed ``reconnect_time_wait`` when ``max_reconnect_attempts=-1``. To get the
jitter there too, each first-connect attempt is one bounded pass over the
servers (``max_reconnect_attempts=1``) followed by our own backoff; once
connected, the client is switched to ``-1`` so reconnects never stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client
from nats.aio.client import Server as NatsServer
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout

from agent.errors import PermanentError
from agent.settings import AgentSettings
from schemas import tracing
from schemas.errors import Unavailable, from_wire
from schemas.messages import M, Message, decode, encode
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

ERROR_CODE = "Nats-Service-Error-Code"
ERROR_TEXT = "Nats-Service-Error"

FIRST_CONNECT_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between first-connect attempts."""
RECONNECT_BACKOFF = (0.5, 15.0)
"""(base, cap) seconds between reconnect attempts; every attempt is jittered, even the first."""

Hook = Callable[[], None]


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


def _servers_text(servers: list[str]) -> str:
    return ", ".join(redact(s) for s in servers)


@dataclass(frozen=True)
class Incoming:
    """One message received on a subscription."""

    subject: str
    data: bytes
    headers: dict[str, str]


class Subscription:
    """A core-NATS subscription; iterate it for messages, ``unsubscribe()`` ends the iteration."""

    def __init__(self, sub: NatsSubscription) -> None:
        self._sub = sub
        self._closed = False

    @property
    def subject(self) -> str:
        return self._sub.subject

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        async for msg in self._sub.messages:
            yield Incoming(subject=msg.subject, data=msg.data, headers=dict(msg.headers or {}))

    async def unsubscribe(self) -> None:
        """Stop receiving; safe to call twice and on a closed connection."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._sub.unsubscribe()
        except NatsError as exc:
            logger.debug("unsubscribe from %s: %s", self._sub.subject, exc)


class Connection:
    """One agent's NATS connection, with hooks for disconnects and reconnects.

    Hooks are plain callables (``event.set``); they run on the event loop from
    nats-py's callbacks and must not block.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._nc: Client | None = None
        self._on_reconnected: list[Hook] = []
        self._on_disconnected: list[Hook] = []
        self._established = False
        self._closing = False
        self._last_error: Exception | None = None
        self._reconnect_attempts = 0

    # --- hooks ----------------------------------------------------------------------
    def on_reconnected(self, hook: Hook) -> None:
        """Call ``hook`` after every successful reconnect (subscriptions are already restored)."""
        self._on_reconnected.append(hook)

    def on_disconnected(self, hook: Hook) -> None:
        """Call ``hook`` whenever the link drops (not when we close it)."""
        self._on_disconnected.append(hook)

    @staticmethod
    def _run_hooks(hooks: list[Hook], what: str) -> None:
        for hook in hooks:
            try:
                hook()
            except Exception:
                logger.exception("%s hook %r failed", what, hook)

    # --- nats-py callbacks ---------------------------------------------------------------
    def _pick_server(self, servers: list[NatsServer], _info: dict[str, Any]) -> tuple[NatsServer, float]:
        base, cap = RECONNECT_BACKOFF
        delay = backoff_delay(self._reconnect_attempts, base=base, cap=cap)
        server = servers[self._reconnect_attempts % len(servers)]
        self._reconnect_attempts += 1
        logger.debug("nats (%s): reconnect attempt %d in %.2fs", self.name, self._reconnect_attempts, delay)
        return server, delay

    async def _error_cb(self, exc: Exception) -> None:
        self._last_error = exc
        if not self._established or self._closing:
            # First connect: the retry loop logs once per attempt instead.
            logger.debug("nats (%s): %s", self.name, exc)
        else:
            logger.warning("nats (%s): %s", self.name, exc or type(exc).__name__)

    async def _disconnected_cb(self) -> None:
        if not self._established or self._closing:
            return
        logger.warning("nats (%s): disconnected from the platform; reconnecting", self.name)
        self._run_hooks(self._on_disconnected, "disconnected")

    async def _reconnected_cb(self) -> None:
        self._reconnect_attempts = 0
        logger.info("nats (%s): reconnected to %s", self.name, self.connected_url or "?")
        self._run_hooks(self._on_reconnected, "reconnected")

    # --- connecting ---------------------------------------------------------------------
    async def _attempt(self, servers: list[str], settings: AgentSettings) -> Client:
        nc = Client()
        try:
            await nc.connect(
                servers,
                name=self.name,
                allow_reconnect=True,
                # One bounded pass over the servers; switched to -1 (forever) once connected.
                max_reconnect_attempts=1,
                reconnect_time_wait=0,
                connect_timeout=5,
                ping_interval=5,
                max_outstanding_pings=3,
                drain_timeout=max(1, round(settings.shutdown_timeout)),
                reconnect_to_server_handler=self._pick_server,
                error_cb=self._error_cb,
                disconnected_cb=self._disconnected_cb,
                reconnected_cb=self._reconnected_cb,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 2  # only bounds how long close() waits for a reconnect task
        return nc

    async def open(self, settings: AgentSettings) -> None:
        """Connect, retrying forever with jittered backoff; PermanentError on an invalid URL."""
        servers = settings.servers
        if not servers:
            raise PermanentError("no NATS server given: pass --server (or set TETHER_AGENT_SERVER)")
        base, cap = FIRST_CONNECT_BACKOFF
        attempt = 0
        while True:
            self._last_error = None
            try:
                self._nc = await self._attempt(servers, settings)
            except NoServersError:
                reason: object = self._last_error or "no server answered"
            except NatsError as exc:
                # Raised before any dial: the URL list itself is unusable.
                raise PermanentError(f"invalid NATS server URL in {_servers_text(servers)}: {exc}") from None
            except (TimeoutError, OSError) as exc:
                reason = exc
            else:
                break
            delay = backoff_delay(attempt, base=base, cap=cap)
            attempt += 1
            logger.warning(
                "cannot connect to NATS at %s (attempt %d): %s; retrying in %.1fs",
                _servers_text(servers),
                attempt,
                reason,
                delay,
            )
            await asyncio.sleep(delay)
        self._established = True
        logger.info("nats (%s): connected to %s", self.name, self.connected_url or "?")

    # --- state ------------------------------------------------------------------------------
    @property
    def client(self) -> Client:
        if self._nc is None:
            raise Unavailable("not connected to NATS yet")
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    @property
    def connected_url(self) -> str | None:
        if self._nc is None or self._nc.connected_url is None:
            return None
        return redact(self._nc.connected_url.geturl())

    # --- messaging ------------------------------------------------------------------------
    async def publish(self, subject: str, message: Message) -> None:
        """Core-NATS publish with trace headers; Unavailable when the client refuses it.

        While the link is down nats-py buffers (up to its pending limit) and flushes on reconnect.
        """
        headers = tracing.inject()
        try:
            await self.client.publish(subject, encode(message), headers=headers or None)
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {exc or type(exc).__name__}") from None

    async def request(self, subject: str, message: Message, reply_type: type[M], timeout: float) -> M:
        return await request(self, subject, message, reply_type, timeout)

    async def subscribe(self, subject: str) -> Subscription:
        try:
            return Subscription(await self.client.subscribe(subject))
        except NatsError as exc:
            raise Unavailable(f"cannot subscribe to {subject}: {exc or type(exc).__name__}") from None

    # --- closing ------------------------------------------------------------------------------
    async def close(self, timeout: float = 5.0) -> None:
        """Drain (let in-flight messages go out), then close; bounded by ``timeout``. Safe twice."""
        nc, self._nc = self._nc, None
        self._closing = True
        if nc is None or nc.is_closed:
            return
        try:
            if nc.is_connected:
                await asyncio.wait_for(nc.drain(), timeout)
        except (TimeoutError, NatsError) as exc:
            logger.debug("nats (%s): drain: %s", self.name, exc or type(exc).__name__)
        finally:
            if not nc.is_closed:
                with contextlib.suppress(Exception):
                    await nc.close()


async def connect(
    settings: AgentSettings,
    name: str,
    *,
    on_reconnected: Hook | None = None,
    on_disconnected: Hook | None = None,
) -> Connection:
    """A connection to ``settings.server`` as client ``name``; waits (forever) until the first connect."""
    conn = Connection(name)
    if on_reconnected is not None:
        conn.on_reconnected(on_reconnected)
    if on_disconnected is not None:
        conn.on_disconnected(on_disconnected)
    await conn.open(settings)
    return conn


async def request(
    conn: Connection, subject: str, message: Message, reply_type: type[M], timeout: float = 5.0
) -> M:
    """Request/reply with a typed answer.

    A service's error reply is raised as its ``TetherError`` kind (``from_wire``);
    no responders, a timeout or a link that is down raise ``Unavailable``.
    """
    try:
        msg = await conn.client.request(subject, encode(message), timeout=timeout, headers=tracing.inject())
    except NoRespondersError:
        raise Unavailable(f"no service answers on {subject}") from None
    except NatsTimeout:
        raise Unavailable(f"no reply on {subject} within {timeout:g}s") from None
    except NatsError as exc:
        raise Unavailable(f"request on {subject} failed: {exc or type(exc).__name__}") from None
    headers = msg.headers or {}
    if ERROR_CODE in headers:
        raise from_wire(headers[ERROR_CODE], headers.get(ERROR_TEXT, ""))
    return decode(msg.data, reply_type)
