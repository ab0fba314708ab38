"""Size limits every publish of a service is held to, before it reaches the server.

nats-server closes a connection that publishes more than its ``max_payload`` (payload *and* headers), and
nats-py checks only the payload, then never reconnects after that error: one oversized write (a reply
carrying an agent's large message, a KV put of a grown record) would take the whole service off the bus.
``GuardedClient`` refuses such a publish in the process instead, with an error the caller handles like any
other failed write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from nats.aio.client import Client
from nats.errors import MaxPayloadError

from services.bus.client import LinkClient

if TYPE_CHECKING:
    from services.bus.watchdog import LinkWatchdog

HEADER_OVERHEAD = 64
"""Bytes of framing around the headers (``NATS/1.0`` line, separators) counted on top of their text."""


class PayloadTooLarge(MaxPayloadError):
    """A publish that the server would refuse by closing the connection."""

    def __init__(self, subject: str, size: int, limit: int) -> None:
        super().__init__()
        self.subject, self.size, self.limit = subject, size, limit

    def __str__(self) -> str:
        return f"message on {self.subject} is {self.size} bytes with headers, over the server's limit of {self.limit}"


def wire_size(payload: bytes, headers: dict[str, str] | None) -> int:
    """What the server counts against ``max_payload``: payload plus encoded headers."""
    if not headers:
        return len(payload)
    return len(payload) + HEADER_OVERHEAD + sum(len(k) + len(v) + 4 for k, v in headers.items())


def fits(nc: Client, payload: bytes, headers: dict[str, str] | None = None) -> bool:
    return wire_size(payload, headers) <= nc.max_payload


class GuardedClient(LinkClient):
    """nats-py's client (with ``LinkClient``'s fixes) that never sends a message the server would close the
    connection for."""

    closing = False
    """Set when we close it ourselves (a close by the server is fatal, ours is not)."""
    watchdog: LinkWatchdog | None = None
    """Ends the service when its reconnect stops trying (``services.bus.watchdog``)."""

    def __init__(self) -> None:
        super().__init__()
        self.reconnected_hooks: list[Callable[[], None]] = []
        """Called after each reconnect (``services.bus.connection``): what was in flight meanwhile is lost."""
        self.dropped: Counter[int] = Counter()
        """Messages nats-py dropped per subscription id, its pending limit reached (``connection``'s error
        callback counts them)."""

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        size = wire_size(payload, headers)
        if size > self.max_payload:
            raise PayloadTooLarge(subject, size, self.max_payload)
        await super().publish(subject, payload, reply, headers)


# --- what the broker holds anyone to (documented in README "Limits") ---------------------------------------
MiB = 1024 * 1024
GiB = 1024 * MiB

AGENT_MAX_PAYLOAD = 1 * MiB
"""Largest message (payload and headers) an agent may publish: in its JWT, refused by the server (which closes
that agent's connection, not anyone else's). A full inventory (5,000 objects) stays well below it."""
AGENT_MAX_SUBS = 64
"""Subscriptions an agent's connection may hold (it needs about five: control, inbox, command pulls)."""
AGENT_MAX_DATA = 64 * MiB
"""Bytes an agent's connection may have pending in the server (the JWT ``data`` limit)."""
BOOTSTRAP_MAX_PAYLOAD = 64 * 1024
"""A connect token's bootstrap user sends one small request."""
BOOTSTRAP_MAX_SUBS = 4

STREAM_MAX_MSG = 1 * MiB
"""Largest message any platform stream or bucket stores (payload and headers)."""
EVT_MAX_BYTES = 2 * GiB
"""What agents can make the platform store at most (results, inventories, status of every cluster)."""
EVT_MAX_PER_SUBJECT = 256
"""Messages kept per agent event subject (``tether.evt.<cluster>.<kind>``): one agent's flood replaces only
its own older events, never another cluster's."""
EVENTS_MAX_BYTES = 512 * MiB
AUDIT_MAX_BYTES = 2 * GiB
DESIRED_HISTORY = 5
"""Records kept per key of the desired state (``DESIRED_BUCKETS``): what an agent away finds waiting for each
object (its consumer delivers every one still kept, in order; a new consumer, the last of each)."""
BUCKET_MAX_BYTES = 64 * MiB
"""Per KV bucket unless ``BUCKET_MAX_BYTES_OF`` says otherwise."""
BUCKET_MAX_BYTES_OF = {"tether-presence": 256 * MiB, "tether-clusters": 256 * MiB}
"""The desired state's 16 buckets take the default each (1 GiB together, as its one bucket did). JetStream
reserves every stream's ``max_bytes`` from the server's ``max_file_store`` (20 GB in the embedded and compose
configs) when the stream is created: all of the above come to about 10.5 GiB, so a server's store
keeps room for the benchmark's and operators' own streams."""
