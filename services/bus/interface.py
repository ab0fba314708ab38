"""What a service may do on the bus, in Tether's types only: the ``Bus`` every service is given.

Two implementations keep this contract: ``NatsBus`` (a real nats-server) and ``MemoryBus`` (one process,
for tests of a service's rules); ``tests/bus`` runs one suite against both.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from schemas.messages import M, Message, decode
from services.bus.admission import AdmissionLimits
from services.bus.records import Records
from services.bus.settings import BusSettings


class Delivery:
    """One message received: from a subscription (``stream_seq`` 0) or from a stream through a consumer."""

    __slots__ = ("_progress", "data", "deliveries", "headers", "pending", "reply", "stream_seq", "subject")

    def __init__(
        self,
        subject: str,
        data: bytes,
        headers: Mapping[str, str] | None = None,
        *,
        stream_seq: int = 0,
        deliveries: int = 1,
        pending: int = 0,
        progress: Callable[[], Awaitable[None]] | None = None,
        reply: str = "",
    ) -> None:
        self.subject = subject
        self.reply = reply
        """Where the sender wants an answer (endpoints answer through the bus, never by hand)."""
        self.data = data
        self.headers: Mapping[str, str] = headers or {}
        self.stream_seq = stream_seq
        """The message's sequence in its stream; 0 when it came from no stream."""
        self.deliveries = deliveries
        """How many times the stream has delivered it (1 the first time)."""
        self.pending = pending
        """Messages of the consumer still waiting after this one."""
        self._progress = progress

    def decode(self, type_: type[M]) -> M:
        """The message as ``type_``; raises InvalidInput for anything else."""
        return decode(self.data, type_)

    async def in_progress(self) -> None:
        """Tell the stream a long handler is still at work, so the message is not redelivered meanwhile."""
        if self._progress is not None:
            await self._progress()


Handler = Callable[[Delivery], Awaitable[None]]


class Subscription(ABC):
    @property
    @abstractmethod
    def pending(self) -> int:
        """Messages received and not handled yet."""

    @property
    @abstractmethod
    def dropped(self) -> int:
        """Messages dropped since the subscription began because ``pending`` was at its limit (a slow
        consumer): a sample of ``pending`` taken between two drains misses them."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop receiving; safe to call twice."""


@dataclass(frozen=True)
class Consumer:
    """A durable consumer of one stream: where it reads, and how failures are retried.

    A message is acknowledged after its handler returns. A handler that raises a retryable error (or any
    other exception) gets the message again later, at most ``MAX_DELIVER`` times; one that raises a
    non-retryable ``TetherError`` has the message terminated at once. Either way a terminated message is
    logged and announced as a ``message.dropped`` event.
    """

    stream: str
    durable: str
    filter_subject: str
    batch: int = 64
    ack_wait: float = 30.0
    deliver: Literal["all", "new"] = "all"
    concurrency: int = 1
    """Messages handled at a time; those of one subject always one after the other, in order."""
    retry_base: float | None = None
    """Delay before a failed message comes back (None: 2 s for a TetherError, 5 s for anything else)."""
    tracer: Any = None
    """An OpenTelemetry tracer: each message's handling continues the trace the message carries."""


@dataclass(frozen=True)
class Endpoint:
    subject: str
    request_type: type[Message]
    handler: Callable[..., Awaitable[Message]]
    caller: Literal["platform", "agent"] = "platform"
    admission: AdmissionLimits | None = None
    """A bounded queue with retry-after for the rest (``services.bus.admission``); None: unbounded."""


@dataclass
class Endpoints:
    """What a service answers. ``platform``: called by the platform (its replies go only to platform
    inboxes). ``agent``: called by agents on ``subjects.agent_call(base, <cluster>)``; the handler gets the
    cluster named in the subject (the broker's word for who calls) and replies go only to its inbox."""

    items: list[Endpoint] = field(default_factory=list)

    def platform(self, subject: str, request_type: type[M], handler: Callable[[M], Awaitable[Message]]) -> None:
        self.items.append(Endpoint(subject, request_type, handler))

    def agent(
        self,
        base: str,
        request_type: type[M],
        handler: Callable[[M, str], Awaitable[Message]],
        admission: AdmissionLimits | None = None,
    ) -> None:
        self.items.append(Endpoint(base, request_type, handler, "agent", admission))


class Host(ABC):
    """A running set of endpoints of one service."""

    refused_replies: int
    """Requests dropped because of where they wanted their reply."""

    @abstractmethod
    async def stop(self, timeout: float = 5.0) -> None:
        """Stop taking requests, let in-flight ones finish (up to ``timeout``); safe to call twice."""


class Bus(ABC):
    """One service's connection to the platform's bus."""

    # --- request/reply ------------------------------------------------------------------------------
    @abstractmethod
    async def call(self, subject: str, message: Message, reply_type: type[M], *, timeout: float = 5.0) -> M:
        """Request/reply with a typed answer; a remote error is raised as its ``TetherError`` kind, no one
        answering (or no answer in time) as ``Unavailable``."""

    @abstractmethod
    async def serve(self, name: str, version: str, endpoints: Endpoints, tracer: Any = None) -> Host:
        """Answer ``endpoints`` as service ``name`` until the host is stopped."""

    @abstractmethod
    async def ping(self, service: str, *, timeout: float = 1.0) -> bool:
        """True when at least one instance of ``service`` answers."""

    # --- plain messages -------------------------------------------------------------------------------
    @abstractmethod
    async def send(
        self, subject: str, message: Message | bytes, *, headers: Mapping[str, str] | None = None, reply: str = ""
    ) -> None:
        """Publish without storing (nobody listening: nobody gets it); flushed before returning. Raises
        ``PayloadTooLarge`` for what the server would close the connection for."""

    @abstractmethod
    async def send_many(self, messages: Sequence[tuple[str, Message]]) -> None:
        """``send`` each (subject, message), flushed once after the last: one round trip for many notices."""

    @abstractmethod
    async def subscribe(
        self, subject: str, handler: Handler, *, pending_limit: int | None = None, queue: str = ""
    ) -> Subscription:
        """Call ``handler`` for every message on ``subject`` (wildcards allowed) until stopped."""

    # --- streams --------------------------------------------------------------------------------------
    @abstractmethod
    async def publish(self, subject: str, message: Message, *, msg_id: str | None = None) -> bool:
        """Store ``message`` in the stream that holds ``subject``, retried through leader elections with
        the same ``msg_id``; False when the stream already had that id (a duplicate, dropped)."""

    @abstractmethod
    async def consume(self, consumer: Consumer, handler: Handler) -> None:
        """Run ``consumer`` forever (see ``Consumer``); survives reconnects and server restarts."""

    @abstractmethod
    async def read_since(
        self,
        stream: str,
        subject: str,
        start: datetime,
        type_: type[M],
        *,
        limit: int = 1000,
        keep: Callable[[M], bool] | None = None,
    ) -> list[M]:
        """Messages on ``subject`` stored since ``start``, oldest first, at most ``limit`` of those ``keep``
        accepts."""

    # --- declarations ---------------------------------------------------------------------------------
    @abstractmethod
    async def declare_streams(self, *kinds: Literal["platform", "commands"]) -> None:
        """Create (or bring up to date) the platform's streams: ``platform`` (events, audit, agents'
        reports); ``commands``: delete the command streams of earlier versions (agents follow the desired
        state now, and it holds whatever those streams did) and the results consumer (agents ask lifecycle
        to record their results)."""

    @abstractmethod
    async def bucket(self, name: str, type_: type[M], *, history: int = 1, ttl: float | None = None) -> Records[M]:
        """Open bucket ``name`` of ``type_`` records, creating it on first use."""

    @abstractmethod
    async def retired_bucket(self, name: str, type_: type[M]) -> Records[M] | None:
        """Bucket ``name`` of an earlier version if it still exists (to move its records), else None."""

    @abstractmethod
    async def delete_bucket(self, name: str) -> None:
        """Delete bucket ``name`` of an earlier version with its history (nothing when it is gone)."""

    # --- each agent's consumer of its cluster's desired state -------------------------------------------
    @abstractmethod
    async def ensure_agent_consumer(self, cluster: str, *, look_up: bool = True) -> bool:
        """Create (or put right) the cluster's agent consumer (``streams.agent_consumer_config``); True when
        it had to. ``look_up=False``: the caller expects it missing (a new cluster's bootstrap, an agent whose
        fetch found it gone), so it is created without asking first (one JetStream API request fewer; an
        identical existing one is left as it is by the server, one with another config is looked up and made
        again)."""

    @abstractmethod
    async def stale_agent_consumers(self, *, pause: float = 0.0) -> list[str]:
        """The clusters whose agent consumer exists with another config than this version's (an earlier
        version's), found by listing consumers a page at a time (``pause`` seconds between requests), not by a
        look-up each."""

    @abstractmethod
    async def delete_agent_consumer(self, cluster: str) -> None:
        """Remove the cluster's agent consumer (its records stay: a new consumer starts from them)."""

    @abstractmethod
    async def forget_agent_commands(self, cluster: str) -> list[str]:
        """Remove the cluster's agent consumer for good (a removed cluster); say what was there."""

    @abstractmethod
    async def update_account(self, account_jwt: str) -> None:
        """Hand the server a new account JWT (revocations); needs a bus connected as the system user."""

    @abstractmethod
    async def held_account(self, account_pub: str) -> str | None:
        """The account JWT the server holds now (its resolver's), or None when it has none; needs a bus
        connected as the system user."""

    # --- the connection -------------------------------------------------------------------------------
    @abstractmethod
    async def another(self, settings: BusSettings, name: str) -> Bus:
        """Another connection to the same bus as ``settings`` say (another NATS user), named ``name``."""

    @abstractmethod
    async def round_trip(self, timeout: float) -> None:
        """Return once the server has answered a ping sent now: everything it sent this connection before it
        has been read (not yet handled). Raises ``Unavailable`` after ``timeout`` seconds without its answer."""

    @property
    @abstractmethod
    def connected(self) -> bool: ...

    @property
    @abstractmethod
    def reconnects(self) -> int:
        """Times the connection was re-established so far."""

    @property
    @abstractmethod
    def max_payload(self) -> int:
        """Largest message (payload and headers) the server takes."""

    @abstractmethod
    async def close(self) -> None:
        """Finish handling what was received, flush what was sent, then close; safe to call twice."""
