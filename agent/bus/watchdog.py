"""A reconnect that stopped trying, found and started again.

nats-py reconnects in one task: it picks a server, dials, shakes hands, re-sends
the subscriptions and flushes, and tries again after each failure. Every step
but two socket waits has a timeout, so a link that is down sees an attempt
begin at least every 69 s (``WatchdogTimes.stuck_after``). In a restart of
10,000 agents one agent's link stayed down for good: its socket open, its
subscriptions restored on the server, nothing published for more than nine
minutes and no attempt made. Whatever path of nats-py leaves a client there,
the agent can see it: the link is down and no attempt has begun for
``stuck_after`` seconds. The watchdog then logs the client's state (which is
what the path is) and starts the reconnect again.

It runs only while the link is down: an idle fleet pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from agent.bus.client import PatchedClient
from agent.bus.events import LinkEvents
from schemas.retrying import jittered

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchdogTimes:
    """How often a down link is looked at, and how long without an attempt makes it stuck."""

    check_every: float = 10.0
    """Seconds between looks at a link that is down (jittered)."""
    stuck_after: float = 120.0
    """Seconds without a new attempt after which a down link is stuck: well over the longest attempt (a 4 s
    backoff, a 5 s dial, two 15 s handshake steps and the 30 s flush: 69 s)."""


class LinkWatchdog:
    """Watches one connection's reconnect while its link is down (``link_down`` starts it)."""

    def __init__(
        self,
        events: LinkEvents,
        client: Callable[[], PatchedClient | None],
        is_up: Callable[[], bool],
        times: WatchdogTimes = WatchdogTimes(),
    ) -> None:
        self._events = events
        self._client = client
        self._is_up = is_up
        self.times = times
        self._task: asyncio.Task[None] | None = None
        self.restarts = 0
        """Reconnects this watchdog found stuck and started again."""

    @property
    def watching(self) -> bool:
        """Whether a down link is being watched now."""
        return self._task is not None and not self._task.done()

    def link_down(self) -> None:
        """The link dropped: watch it until it is up again (a hook; never blocks)."""
        if not self.watching:
            name = f"link-watchdog-{self._events.name}"
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=name)

    async def stop(self) -> None:
        """Stop watching (the connection is closing); safe twice."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(jittered(self.times.check_every))
            if not self.check():
                return

    def check(self) -> bool:
        """One look; whether to keep watching (False once the link is up or closed)."""
        nc = self._client()
        if nc is None or nc.is_closed or self._events.closing or self._is_up():
            return False
        quiet = time.monotonic() - self._events.last_attempt_at
        if quiet < self.times.stuck_after:
            return True
        logger.error(
            "nats (%s): the link has been down with no reconnect attempt for %.0fs; starting the reconnect again (%s)",
            self._events.name,
            quiet,
            nc.link_state(),
        )
        self.restarts += 1
        self._events.last_attempt_at = time.monotonic()
        nc.restart_reconnect()
        return True
