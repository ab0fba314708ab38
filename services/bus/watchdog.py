"""A reconnect that stopped trying ends the service, so that its supervisor restarts it.

nats-py reconnects in one task, and every step of an attempt but two socket waits has a timeout: a link that
is down sees an attempt begin at least every ~25 s (a 5 s backoff, three 2 s handshake steps, the 10 s
flush). In a restart of 10,000 agents one agent's link stayed down for good with no attempt made (the agent's
bus restarts its reconnect: ``agent.bus.watchdog``). A service on such a link is alive and deaf, and nothing
restarts it; so a service whose link is down with no attempt begun for ``stuck_after`` seconds logs nats-py's
state and ends (``running.connection_lost``), like one whose connection was closed for good.

It runs only while the link is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from nats.aio.client import Client

from schemas.retrying import jittered
from services.bus import running

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchdogTimes:
    """How often a down link is looked at, and how long without an attempt makes it stuck."""

    check_every: float = 10.0
    """Seconds between looks at a link that is down (jittered by a quarter)."""
    stuck_after: float = 120.0
    """Seconds without a new attempt after which a down link is stuck: several of the longest attempts."""


class LinkWatchdog:
    """Watches one service connection while its link is down; ``attempt``, ``down`` and ``up`` are nats-py's
    reconnect handler and callbacks reporting in."""

    def __init__(self, name: str, nc: Client, times: WatchdogTimes = WatchdogTimes()) -> None:
        self.name = name
        self._nc = nc
        self.times = times
        self.last_attempt_at = time.monotonic()
        self._up = True
        self._task: asyncio.Task[None] | None = None
        self.stopped = False

    def attempt(self) -> None:
        self.last_attempt_at = time.monotonic()

    def up(self) -> None:
        self._up = True

    def down(self) -> None:
        self._up = False
        self.last_attempt_at = time.monotonic()
        if not self.stopped and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._watch(), name=f"link-watchdog-{self.name}")

    async def stop(self) -> None:
        """Stop watching (the connection is closing); safe twice."""
        self.stopped = True
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
        """One look; whether to keep watching."""
        nc = self._nc
        if self.stopped or nc.is_closed or (self._up and nc.is_connected):
            return False
        quiet = time.monotonic() - self.last_attempt_at
        if quiet < self.times.stuck_after:
            return True
        task = nc._reconnection_task
        state = "none" if task is None else "running" if not task.done() else "ended"
        logger.critical(
            "nats (%s): the link has been down with no reconnect attempt for %.0fs (status %s, reconnect task %s, "
            "last error %r); ending the service so that it is restarted",
            self.name,
            quiet,
            nc._status,
            state,
            nc.last_error,
        )
        running.connection_lost(self.name)
        return False
