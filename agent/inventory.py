"""Inventory: what the driver holds, on ``tether.evt.<cluster>.inventory``, after every (re)connect and
every ``inventory_interval`` seconds (jittered by a quarter, so a fleet does not report in step). Lifecycle
reconciles it against the desired state."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import msgspec

from agent.bus import Connection
from agent.drivers import Driver
from agent.errors import DriverError
from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import MAX_OBJECTS, Inventory, InventoryItem
from schemas.retrying import backoff_delay, jittered

logger = logging.getLogger(__name__)

Reason = Literal["connect", "periodic"]

INVENTORY_BACKOFF = (1.0, 30.0)
"""(base, cap) seconds between attempts to publish one inventory."""
PATIENT_TIMEOUT = 30.0
"""Seconds to wait for the stream to acknowledge an inventory. After a platform restart every agent sends
one at once; a short timeout only lengthens the queue (the first publish is still served)."""


class InventoryReporter:
    """Reports the inventory; ``now.set()`` asks for one at once (after a hello)."""

    def __init__(self, conn: Connection, cluster: str, session: str, driver: Driver, interval: float) -> None:
        self._conn = conn
        self._cluster = cluster
        self._session = session
        self._driver = driver
        self._interval = interval
        self.now = asyncio.Event()
        self.sent = 0
        """Inventories this process began to report."""
        self.last_at = 0.0
        """When the last report ended (published or given up; wall clock)."""
        self.activity: Callable[[], Mapping[tuple[str, str, str], float]] | None = None
        """(kind, project, name) -> when a member last used it through the gateway: reported as activity."""
        self.periodic_due: Callable[[], bool] = lambda: True
        """Whether a periodic inventory is worth sending now. Not while the link is down, nor between a
        reconnect and its hello's answer: the inventory after that hello follows anyway. Sent into a restart
        of the platform, periodic ones were a third of the stream writes of 10,000 agents' reconnects, each
        waiting in nats-py's buffer or in the busy server's queue (a fifth of them unacknowledged after 30 s)."""

    async def run(self) -> None:
        while True:
            reason: Reason = "periodic"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(jittered(self._interval)):
                    await self.now.wait()
                reason = "connect"
            self.now.clear()
            if reason == "periodic" and not self.periodic_due():
                logger.debug("periodic inventory skipped: the link is down or a hello is awaited")
                continue
            await self.send(reason)

    async def send(self, reason: Reason) -> None:
        """Publish one inventory, retrying until it lands, a newer one is due, or the interval passed."""
        try:
            await self._send(reason)
        finally:
            self.last_at = time.time()

    async def _items(self) -> tuple[InventoryItem, ...] | None:
        try:
            items = await self._driver.inventory()
        except DriverError as exc:
            logger.warning("cannot read the inventory (%s); it is reported once the cluster answers", exc)
            return None
        except Exception:
            logger.exception("the %s driver failed to list its inventory", self._driver.name)
            return None
        if len(items) > MAX_OBJECTS:
            logger.error(
                "%d objects, over the %d one inventory may hold: reporting the first %d",
                len(items),
                MAX_OBJECTS,
                MAX_OBJECTS,
            )
            items = items[:MAX_OBJECTS]
        return with_activity(items, self.activity()) if self.activity is not None else items

    async def _send(self, reason: Reason) -> None:
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self._interval
        self.sent += 1
        msg_id = f"inventory-{self._session}-{self.sent}"
        subject = subjects.evt(self._cluster, subjects.EVT_INVENTORY)
        base, cap = INVENTORY_BACKOFF
        attempt = 0
        while (items := await self._items()) is not None:
            message = Inventory(cluster=self._cluster, items=items, at=time.time(), reason=reason)
            try:
                await self._conn.js_publish(subject, message, msg_id=msg_id, timeout=PATIENT_TIMEOUT)
            except Unavailable as exc:
                delay = backoff_delay(attempt, base=base, cap=cap)
                attempt += 1
                if reason == "periodic" and not self.periodic_due():
                    # Lost in an outage: the inventory after the reconnect's hello replaces it.
                    logger.info("periodic inventory not published (%s); the reconnect's follows", exc.description)
                    return
                if attempt == 1:
                    logger.warning("inventory not published: %s; retrying", exc.description)
                if loop.time() + delay > give_up_at or await self._newer_due(delay):
                    return
                continue
            logger.info("inventory reported (%s, %d objects)", reason, len(items))
            return

    async def _newer_due(self, delay: float) -> bool:
        """Wait ``delay``; True when a fresh inventory was asked for meanwhile (it follows at once)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self.now.wait()
        return self.now.is_set()


def with_activity(
    items: Sequence[InventoryItem], activity: Mapping[tuple[str, str, str], float]
) -> tuple[InventoryItem, ...]:
    """The inventory with each workload's last use as its activity, where that is newer (lifecycle's
    auto-sleep reads it: one write per inventory for a busy tenant, not one per request)."""
    out = []
    for item in items:
        at = activity.get((item.kind, item.project, item.name), 0.0)
        out.append(msgspec.structs.replace(item, last_activity=at) if at > item.last_activity else item)
    return tuple(out)
