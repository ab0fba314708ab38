"""Heartbeats: the cluster's health on ``tether.hb.<cluster>``, every interval and at once when asked."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import msgspec

from agent.bus import Connection
from agent.health import HealthReader
from agent.telemetry import AgentMetrics
from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import MAX_OBJECTS, Heartbeat

logger = logging.getLogger(__name__)


class Heartbeats:
    """Beats every ``interval()`` seconds; ``now.set()`` asks for one at once (after a hello)."""

    def __init__(
        self,
        conn: Connection,
        cluster: str,
        session: str,
        health: HealthReader,
        interval: Callable[[], float],
        metrics: AgentMetrics,
    ) -> None:
        self._conn = conn
        self._cluster = cluster
        self._session = session
        self._health = health
        self._interval = interval
        self._metrics = metrics
        self.now = asyncio.Event()
        self.sent = 0
        """Heartbeats published (or tried) by this process; also the last one's ``seq``."""
        self.last_at = 0.0
        """When the last heartbeat went out while connected (wall clock)."""

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._interval()
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                # A timer that sets the event, not a timeout that cancels the wait and raises TimeoutError on
                # every beat: 4.5 instead of 8.7 us of CPU per beat (10,000 agents: 2,000 beats/s).
                timer = loop.call_later(delay, self.now.set)
                try:
                    await self.now.wait()
                finally:
                    timer.cancel()
            self.now.clear()
            self._metrics.heartbeat_lag.record(max(0.0, loop.time() - next_at))
            await self.beat()
            next_at = loop.time() + self._interval()

    async def beat(self) -> None:
        """Publish one heartbeat; never raises for a link or cluster problem."""
        if not self._conn.is_connected:
            # Heartbeats buffered through an outage carry nothing (presence uses the
            # platform's clock); a fresh one follows the hello after the reconnect.
            logger.debug("link down; heartbeat skipped")
            return
        health = await self._health.current()
        if len(health.control_planes) > MAX_OBJECTS:
            # The platform refuses a heartbeat over its bounds whole: report the first ones, stay online.
            health = msgspec.structs.replace(health, control_planes=health.control_planes[:MAX_OBJECTS])
        self.sent += 1
        beat = Heartbeat(
            cluster=self._cluster, session=self._session, seq=self.sent, sent_at=time.time(), health=health
        )
        try:
            await self._conn.publish(subjects.heartbeat(self._cluster), beat)
        except Unavailable as exc:
            logger.warning("heartbeat %d not sent: %s", self.sent, exc.description)
        self.last_at = time.time()
