"""What happens to the link, as nats-py reports it: hooks for reconnects and disconnects, and the two
ends an agent cannot recover from by itself (refused credentials, a connection closed for good)."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from nats.aio.client import Server as NatsServer

from agent.bus.client import is_auth_error
from schemas.errors import describe
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

Hook = Callable[[], None]

RECONNECT_BACKOFF = (0.5, 4.0)
"""(base, cap) seconds between reconnect attempts; every attempt is jittered, even the first. The cap is short
(nats-py's own default is a fixed 2 s): the backoff grows while the server is down, so with a 15 s cap agents
slept 4-15 s into a restarted server's uptime (a restart at 1,000 agents: reconnected p50 5.0 s after NATS was
started, NATS ready after 1.9 s). An attempt on a server that is down costs a refused TCP connect; the jitter
spreads a fleet's attempts over the cap."""
AUTH_REFUSALS_BEFORE_GIVING_UP = 3


class LinkEvents:
    """nats-py's callbacks for one connection, and what they tell the agent.

    Hooks are plain callables (``event.set``); they run on the event loop from
    nats-py's callbacks and must not block.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.on_reconnected: list[Hook] = []
        self.on_disconnected: list[Hook] = []
        self.established = False
        """True once the first connect succeeded (before it, the dialer reports problems)."""
        self.closing = False
        self.last_error: Exception | None = None
        self.reconnect_attempts = 0
        self.last_attempt_at = time.monotonic()
        """When the link dropped or the last reconnect attempt began (``time.monotonic``): the watchdog's clue."""
        self.auth_refusals = 0
        self.fatal = asyncio.Event()
        """Set during a first connect that cannot succeed (an unverifiable TLS certificate)."""
        self.refused = asyncio.Event()
        """Set when the broker keeps refusing our credentials (revoked or expired): stop for good."""
        self.lost = asyncio.Event()
        """Set when the server closed the connection for good (nats-py does not reconnect after some
        server errors): the agent must stop, and be restarted."""
        self.connected_url: Callable[[], str | None] = lambda: None

    @staticmethod
    def _run_hooks(hooks: list[Hook], what: str) -> None:
        for hook in hooks:
            try:
                hook()
            except Exception:
                logger.exception("%s hook %r failed", what, hook)

    def pick_server(self, servers: list[NatsServer], _info: dict[str, Any]) -> tuple[NatsServer, float]:
        base, cap = RECONNECT_BACKOFF
        delay = backoff_delay(self.reconnect_attempts, base=base, cap=cap)
        server = servers[self.reconnect_attempts % len(servers)]
        self.reconnect_attempts += 1
        self.last_attempt_at = time.monotonic()
        logger.debug("nats (%s): reconnect attempt %d in %.2fs", self.name, self.reconnect_attempts, delay)
        return server, delay

    async def error(self, exc: Exception) -> None:
        self.last_error = exc
        if not self.established and isinstance(exc, ssl.SSLCertVerificationError):
            self.fatal.set()
        if is_auth_error(exc):
            self.auth_refusals += 1
            if self.established and self.auth_refusals >= AUTH_REFUSALS_BEFORE_GIVING_UP:
                self.refused.set()
        if not self.established or self.closing:
            # First connect: the retry loop logs once per attempt instead.
            logger.debug("nats (%s): %s", self.name, exc)
        else:
            logger.warning("nats (%s): %s", self.name, describe(exc))

    async def disconnected(self) -> None:
        if not self.established or self.closing:
            return
        self.last_attempt_at = time.monotonic()
        logger.warning("nats (%s): disconnected from the platform; reconnecting", self.name)
        self._run_hooks(self.on_disconnected, "disconnected")

    async def closed(self) -> None:
        if self.established and not self.closing:
            logger.error("nats (%s): the server closed the connection: %s", self.name, self.last_error or "?")
            if is_auth_error(self.last_error):
                self.refused.set()
            self.lost.set()

    async def reconnected(self) -> None:
        self.reconnect_attempts = 0
        self.auth_refusals = 0
        logger.info("nats (%s): reconnected to %s", self.name, self.connected_url() or "?")
        self._run_hooks(self.on_reconnected, "reconnected")
