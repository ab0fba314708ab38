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
import ssl
from collections import UserString
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from nats.aio.client import Client
from nats.aio.client import Server as NatsServer
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError, NoServersError
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import Header
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError
from nats.js.errors import NotFoundError as JsNotFound

from agent.errors import PermanentError
from agent.settings import AgentSettings
from schemas import subjects, tracing
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


class _Client(Client):
    """nats-py's client, with PONGs that outlive the flush that asked for them.

    nats-py 2.16 cancels a flush's PONG future when the flush times out (on a
    slow server: in a reconnect, a drain, a close) and later calls
    ``set_result`` on it when the PONG arrives; the ``InvalidStateError`` ends
    the read loop, and the connection then carries nothing in either direction
    until its pings go stale. Seen on 148 of 10,000 agents in the scale
    benchmark, each one stuck on its first request.
    """

    async def _process_pong(self) -> None:
        if self._pongs:
            future = self._pongs.pop(0)
            if not future.done():
                future.set_result(True)
            self._pongs_received += 1
            self._pings_outstanding = 0


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


@dataclass(frozen=True)
class Published:
    """A stream's acknowledgement of one message."""

    stream: str
    seq: int
    duplicate: bool
    """True when the stream already held a message with the same ``Nats-Msg-Id``."""


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


@dataclass(frozen=True)
class NatsIdentity:
    """Who the agent is to the broker, and where its replies come (its own inbox)."""

    creds: str
    """A ``.creds`` file's path, or (``in_memory``) the creds text itself."""
    inbox_prefix: str
    refused: str
    """What to tell the operator when the broker refuses these credentials."""
    in_memory: bool = False


AUTH_REFUSALS_BEFORE_GIVING_UP = 3


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
        self._identity: NatsIdentity | None = None
        self._inbox_prefix: str | None = None
        self._auth_refusals = 0
        self._fatal = asyncio.Event()
        self.refused = asyncio.Event()
        """Set when the broker keeps refusing our credentials (revoked or expired): stop for good."""
        self.lost = asyncio.Event()
        """Set when the server closed the connection for good (nats-py does not reconnect after some
        server errors): the agent must stop, and be restarted."""

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
        if not self._established and isinstance(exc, ssl.SSLCertVerificationError):
            self._fatal.set()
        if _is_auth_error(exc):
            self._auth_refusals += 1
            if self._established and self._auth_refusals >= AUTH_REFUSALS_BEFORE_GIVING_UP:
                self.refused.set()
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

    async def _closed_cb(self) -> None:
        if self._established and not self._closing:
            logger.error("nats (%s): the server closed the connection: %s", self.name, self._last_error or "?")
            if _is_auth_error(self._last_error):
                self.refused.set()
            self.lost.set()

    async def force_reconnect(self) -> None:
        """Reconnect now (e.g. to present renewed credentials before the old ones expire)."""
        if self._nc is not None and self._nc.is_connected:
            await self._nc.force_reconnect()

    async def _reconnected_cb(self) -> None:
        self._reconnect_attempts = 0
        self._auth_refusals = 0
        logger.info("nats (%s): reconnected to %s", self.name, self.connected_url or "?")
        self._run_hooks(self._on_reconnected, "reconnected")

    # --- connecting ---------------------------------------------------------------------
    async def _attempt(self, servers: list[str], settings: AgentSettings) -> Client:
        nc = _Client()
        auth: dict[str, Any] = {}
        if settings.ca_file or any(s.startswith("tls://") for s in servers):
            try:
                auth["tls"] = ssl.create_default_context(cafile=str(settings.ca_file) if settings.ca_file else None)
            except (OSError, ssl.SSLError) as exc:
                raise PermanentError(f"cannot use CA file {settings.ca_file}: {exc}") from None
        if self._inbox_prefix:
            auth["inbox_prefix"] = self._inbox_prefix
        if self._identity is not None:
            ident = self._identity
            auth["user_credentials"] = UserString(ident.creds) if ident.in_memory else ident.creds
            auth["inbox_prefix"] = ident.inbox_prefix
        try:
            await nc.connect(
                servers,
                name=self.name,
                **auth,
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
                closed_cb=self._closed_cb,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await nc.close()
            raise
        nc.options["max_reconnect_attempts"] = -1
        nc.options["reconnect_time_wait"] = 2  # only bounds how long close() waits for a reconnect task
        return nc

    async def _attempt_or_fatal(self, servers: list[str], settings: AgentSettings) -> Client:
        """One connect attempt, abandoned at once when the server's certificate cannot be verified
        (nats-py reports that through the error callback and keeps the attempt waiting)."""
        self._fatal.clear()
        attempt = asyncio.ensure_future(self._attempt(servers, settings))
        fatal = asyncio.ensure_future(self._fatal.wait())
        try:
            await asyncio.wait({attempt, fatal}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            fatal.cancel()
        if not attempt.done():
            attempt.cancel()
            with contextlib.suppress(BaseException):
                await attempt
            error = self._last_error
            detail = error.verify_message if isinstance(error, ssl.SSLCertVerificationError) else str(error)
            raise PermanentError(
                f"the NATS server's TLS certificate cannot be verified ({detail}): pass the platform's CA with "
                "--ca-file"
            )
        return attempt.result()

    async def open(self, settings: AgentSettings, identity: NatsIdentity | None = None) -> None:
        """Connect, retrying forever with jittered backoff.

        PermanentError on an invalid URL, or when the broker refuses our credentials.
        """
        self._identity = identity
        servers = settings.servers
        if not servers:
            raise PermanentError("no NATS server given: pass --server (or set TETHER_AGENT_SERVER)")
        base, cap = FIRST_CONNECT_BACKOFF
        attempt = 0
        while True:
            self._last_error = None
            try:
                self._nc = await self._attempt_or_fatal(servers, settings)
            except NoServersError:
                reason: object = self._last_error or "no server answered"
                if isinstance(self._last_error, ssl.SSLCertVerificationError):
                    raise PermanentError(
                        f"the NATS server's TLS certificate cannot be verified ({self._last_error.verify_message}): "
                        "pass the platform's CA with --ca-file"
                    ) from None
                if _is_auth_error(self._last_error):
                    refused = (
                        identity.refused
                        if identity is not None
                        else "NATS requires credentials and this agent has none: use the whole connect token "
                        "printed by 'tether cluster connect'"
                    )
                    raise PermanentError(f"{refused} (NATS: {self._last_error})") from None
            except NatsError as exc:
                # Raised before any dial: the URL list itself is unusable.
                raise PermanentError(f"invalid NATS server URL in {_servers_text(servers)}: {exc}") from None
            except ssl.SSLCertVerificationError as exc:
                raise PermanentError(
                    f"the NATS server's TLS certificate cannot be verified ({exc.verify_message}): "
                    "pass the platform's CA with --ca-file"
                ) from None
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

    async def publish_bytes(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Core-NATS publish of bytes already encoded (the Kubernetes gateway's frames)."""
        try:
            await self.client.publish(subject, data, headers=headers or None)
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {exc or type(exc).__name__}") from None

    async def request(self, subject: str, message: Message, reply_type: type[M], timeout: float) -> M:
        return await request(self, subject, message, reply_type, timeout)

    async def subscribe(self, subject: str) -> Subscription:
        try:
            return Subscription(await self.client.subscribe(subject))
        except NatsError as exc:
            raise Unavailable(f"cannot subscribe to {subject}: {exc or type(exc).__name__}") from None

    @property
    def jetstream(self) -> JetStreamContext:
        return self.client.jetstream()

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
            raise Unavailable(f"JetStream refused {subject}: {_api_text(exc)}") from None
        except NatsError as exc:
            raise Unavailable(f"cannot publish on {subject}: {exc or type(exc).__name__}") from None
        return Published(stream=ack.stream, seq=ack.seq, duplicate=bool(ack.duplicate))

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


def _is_auth_error(exc: BaseException | None) -> bool:
    text = str(exc or "").lower()
    return "authorization violation" in text or "authentication expired" in text or "revoked" in text


async def request(conn: Connection, subject: str, message: Message, reply_type: type[M], timeout: float = 5.0) -> M:
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


# --- the command queue ---------------------------------------------------------------------

FETCH_TIMEOUT = 20.0
"""Seconds one fetch waits for a command. A command arriving meanwhile is delivered at once; the wait only
sets how many pull requests an idle agent sends (10,000 idle agents: 500/s). A pull lost in a reconnect
does not wait this long: a reconnect ends the fetch."""
ACK_TIMEOUT = 10.0
"""Seconds an acknowledgement waits for the server's confirmation."""
DECLARE_TIMEOUT = 30.0
"""Seconds a consumer lookup or declaration may take. Generous on purpose: nats-server answers JetStream
API requests one after another, and creating a consumer on a work-queue stream checks it against every
other consumer (10,000 agents connecting at once queue for tens of seconds); a request asked again after
a short timeout is still processed, so impatience only lengthens the queue."""
RECHECK_AFTER = 300.0
"""Seconds of idle fetching after which the consumer's existence is checked again."""
BIND_BACKOFF = (1.0, 30.0)
"""(base, cap) seconds between attempts to set up the consumer."""


STREAM_NOT_FOUND = 10059
"""JetStream's error code for a missing stream (a missing consumer is 10014)."""


def _api_text(exc: Exception) -> str:
    if isinstance(exc, APIError) and exc.description:
        return str(exc.description)
    return str(exc) or type(exc).__name__


class Delivery:
    """One command delivered from the CMD stream, with its acknowledgements.

    The acknowledgements raise Unavailable when they cannot be sent; an
    acknowledgement that never arrives only means a redelivery, which the
    revision check makes harmless.
    """

    def __init__(self, msg: Msg, ack_timeout: float = 5.0) -> None:
        self._msg = msg
        self._ack_timeout = ack_timeout
        self.subject: str = msg.subject
        self.data: bytes = msg.data
        self.headers: dict[str, str] = dict(msg.headers or {})
        try:
            meta = msg.metadata
            self.stream_seq: int = meta.sequence.stream
            self.num_delivered: int = meta.num_delivered
        except Exception:  # not a JetStream message: no metadata to read
            self.stream_seq, self.num_delivered = 0, 1

    def __repr__(self) -> str:
        return f"Delivery(subject={self.subject!r}, seq={self.stream_seq}, delivered={self.num_delivered})"

    async def _do(self, what: str, step: Callable[[], Any]) -> None:
        try:
            await step()
        except (NatsError, TimeoutError) as exc:
            raise Unavailable(f"cannot {what} command {self.stream_seq}: {exc or type(exc).__name__}") from None

    async def ack(self) -> None:
        """Done: the server removes the command. Waits for the server to confirm."""
        await self._do("ack", lambda: self._msg.ack_sync(timeout=self._ack_timeout))

    async def nak(self, delay: float | None = None) -> None:
        """Not now: redeliver after ``delay`` seconds (nothing after it is delivered before)."""
        await self._do("nak", lambda: self._msg.nak(delay=delay))

    async def term(self) -> None:
        """Never: the server drops the command without redelivering it."""
        await self._do("terminate", self._msg.term)

    async def in_progress(self) -> None:
        """Still working on it: restart the server's acknowledgement timer."""
        await self._do("extend", self._msg.in_progress)


class CommandQueue:
    """This cluster's commands, one at a time, through its durable pull consumer.

    The consumer (``agent-<cluster>`` on its shard's stream, filtered on this cluster's commands,
    explicit acks, one unacknowledged command at a time) is created by the platform
    when the agent says hello; the agent's JWT may only look it up, fetch from it and
    ack, so no agent can re-filter a consumer onto another cluster's commands. The
    agent only looks it up (never re-declares after a reconnect: on a work-queue
    stream every creation is checked against all other consumers, which would cost
    a 10,000-agent fleet minutes of the server's JetStream API after a restart);
    when it is missing, ``on_missing`` asks the platform again. It is bound with
    ``pull_subscribe_bind``, never ``pull_subscribe``, which would ignore an
    existing durable's config. The binding survives reconnects (nats-py
    restores the subscription); after a reconnect the consumer is only looked
    up again, and the fetch the link dropped is asked again at once.

    ``next()`` never raises for a bus problem: while the CMD stream does not
    exist yet, JetStream is unavailable or the link is down, it backs off
    with jitter (logging once per outage) and returns None, so the caller's
    loop can look at its stop flag and call again.
    """

    def __init__(
        self,
        conn: Connection,
        cluster: str,
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        declare_timeout: float = DECLARE_TIMEOUT,
        recheck_after: float = RECHECK_AFTER,
        on_missing: Hook | None = None,
    ) -> None:
        self._conn = conn
        self.cluster = cluster
        self.consumer = subjects.agent_consumer(cluster)
        self.stream = subjects.cmd_stream(cluster)
        self._fetch_timeout = fetch_timeout
        self._declare_timeout = declare_timeout
        self._on_missing = on_missing
        self._recheck_after = recheck_after
        self._sub: JetStreamContext.PullSubscription | None = None
        self._attempt = 0
        self._trouble: str | None = None
        self._idle_since: float | None = None
        self._closed = False
        self._stale = False
        self._verify = False
        self._wake = asyncio.Event()
        self.declarations = 0
        """Times this queue found its consumer missing and asked the platform to create it again."""

    @property
    def bound(self) -> bool:
        """Whether commands can be fetched (the consumer is declared and bound)."""
        return self._sub is not None

    def invalidate(self) -> None:
        """After a reconnect: look the consumer up again and end the fetch in progress (its pull request
        did not survive the link). Safe from a callback."""
        self._verify = True
        self._wake.set()

    @staticmethod
    async def _unsubscribe(sub: JetStreamContext.PullSubscription) -> None:
        try:
            await sub.unsubscribe()
        except (NatsError, TimeoutError) as exc:
            logger.debug("unbinding the command consumer: %s", exc or type(exc).__name__)

    async def _declare(self) -> None:
        """Make sure the consumer exists. The platform creates it (at bootstrap and at every hello); the
        agent's JWT may not create one. When it is missing, ask the platform again (``on_missing``: a hello)
        and wait."""
        try:
            await self._conn.jetstream.consumer_info(self.stream, self.consumer, timeout=self._declare_timeout)
        except JsNotFound as exc:
            if exc.err_code != STREAM_NOT_FOUND and self._on_missing is not None:
                self.declarations += 1
                self._on_missing()
            raise

    async def _bind(self) -> JetStreamContext.PullSubscription:
        await self._declare()
        return await self._conn.jetstream.pull_subscribe_bind(durable=self.consumer, stream=self.stream)

    async def _still_there(self) -> bool:
        """False when the consumer is gone (the stream was deleted or re-created)."""
        try:
            await self._conn.jetstream.consumer_info(self.stream, self.consumer, timeout=self._declare_timeout)
        except JsNotFound:
            return False
        return True

    def _trouble_began(self, text: str, *, expected: bool = False) -> float:
        base, cap = BIND_BACKOFF
        delay = backoff_delay(self._attempt, base=base, cap=cap)
        self._attempt += 1
        if self._trouble is None:
            level = logging.WARNING if expected else logging.ERROR
            logger.log(level, "%s; retrying with backoff (logged once until it works)", text)
        else:
            logger.debug("%s (attempt %d); retrying in %.1fs", text, self._attempt, delay)
        self._trouble = text
        return delay

    def _trouble_over(self) -> None:
        if self._trouble is not None:
            logger.info("receiving commands for cluster %r again", self.cluster)
        self._trouble = None
        self._attempt = 0

    async def _backoff(self, text: str, *, expected: bool = True) -> None:
        await asyncio.sleep(self._trouble_began(text, expected=expected))

    async def _set_up(self) -> bool:
        """Declare (and bind, when not bound) the consumer; False after a backoff."""
        try:
            if self._sub is None:
                self._sub = await self._bind()
                logger.info("bound to consumer %s on stream %s for commands", self.consumer, self.stream)
            else:
                await self._declare()
        except JsNotFound as exc:
            await self._backoff(
                f"cannot bind to consumer {self.consumer} on stream {self.stream}: {_api_text(exc)} "
                "(the lifecycle service creates the stream); commands wait"
            )
            return False
        except TimeoutError:
            await self._backoff("JetStream did not answer; commands wait")
            return False
        except APIError as exc:
            await self._backoff(f"JetStream refused the command consumer: {_api_text(exc)}", expected=False)
            return False
        except NatsError as exc:
            await self._backoff(f"cannot bind to the command consumer: {exc or type(exc).__name__}")
            return False
        self._idle_since = None
        return True

    async def _fetch(self, sub: JetStreamContext.PullSubscription) -> list[Msg]:
        """One fetch, ended early (as a quiet one) by a reconnect."""
        self._wake.clear()
        fetch = asyncio.ensure_future(sub.fetch(1, timeout=self._fetch_timeout))
        wake = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait({fetch, wake}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            wake.cancel()
            if not fetch.done():
                fetch.cancel()
            # Wait for it even when cancelled: a command that came in meanwhile is in its result.
            await asyncio.wait({fetch})
            if not fetch.cancelled():
                fetch.exception()  # nats-py turns a cancelled fetch into a TimeoutError: seen, not an error
        if fetch.cancelled():
            raise TimeoutError("the fetch was ended by a reconnect")
        return fetch.result()

    async def next(self) -> Delivery | None:
        """The next command, or None after a quiet fetch or a backoff."""
        if self._closed:
            raise Unavailable("the command queue was closed")
        loop = asyncio.get_running_loop()
        if not self._conn.is_connected:
            await self._backoff("not connected to NATS; commands wait")
            return None
        if self._stale:
            self._stale = False
            self._verify = False
            self._idle_since = None
            old, self._sub = self._sub, None
            if old is not None:
                await self._unsubscribe(old)
        if self._sub is None or self._verify:
            self._verify = False
            if not await self._set_up():
                self._verify = self._sub is not None
                return None
        elif self._idle_since is not None and loop.time() - self._idle_since > self._recheck_after:
            # A deleted consumer (stream re-created) looks like a quiet one: check once in a while.
            self._idle_since = None
            try:
                gone = not await self._still_there()
            except (NatsError, TimeoutError) as exc:
                logger.debug("checking consumer %s: %s", self.consumer, exc or type(exc).__name__)
                gone = False
            if gone:
                logger.warning("consumer %s disappeared; declaring it again", self.consumer)
                self._stale = True
                return None
        sub = self._sub
        assert sub is not None
        try:
            msgs = await self._fetch(sub)
        except TimeoutError:
            # Quiet (nats-py's timeouts subclass the builtin); also a pull lost in a reconnect.
            if self._idle_since is None:
                self._idle_since = loop.time()
            self._trouble_over()
            return None
        except (NatsError, ValueError) as exc:
            # An API error status (consumer gone, ...), a closed connection or subscription.
            self._stale = True
            text = _api_text(exc) if isinstance(exc, APIError) else str(exc) or type(exc).__name__
            await self._backoff(f"cannot fetch commands: {text}")
            return None
        self._trouble_over()
        self._idle_since = None
        if not msgs:
            return None
        return Delivery(msgs[0], ack_timeout=ACK_TIMEOUT)

    async def close(self) -> None:
        """Stop fetching; the consumer stays (it is durable). Safe twice."""
        self._closed = True
        sub, self._sub = self._sub, None
        if sub is not None:
            await self._unsubscribe(sub)
