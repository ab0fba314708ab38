"""What travels on the agent's link: received messages, stream acknowledgements, subscriptions, identities."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

from nats.aio.subscription import Subscription as NatsSubscription
from nats.errors import Error as NatsError

logger = logging.getLogger(__name__)


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
