"""Size limits every publish of a service is held to, before it reaches the server.

nats-server closes a connection that publishes more than its ``max_payload`` (payload *and* headers), and
nats-py checks only the payload, then never reconnects after that error: one oversized write (a reply
carrying an agent's large message, a KV put of a grown record) would take the whole service off the bus.
``GuardedClient`` refuses such a publish in the process instead, with an error the caller handles like any
other failed write.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.errors import MaxPayloadError

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


class GuardedClient(Client):
    """nats-py's client that never sends a message the server would close the connection for."""

    closing = False
    """Set when we close it ourselves (a close by the server is fatal, ours is not)."""

    async def publish(
        self, subject: str, payload: bytes = b"", reply: str = "", headers: dict[str, str] | None = None
    ) -> None:
        size = wire_size(payload, headers)
        if size > self.max_payload:
            raise PayloadTooLarge(subject, size, self.max_payload)
        await super().publish(subject, payload, reply, headers)
