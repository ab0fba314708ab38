"""The cluster's health as the agent last saw it: what heartbeats and hellos carry."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from agent import VERSION
from agent.drivers import Driver
from schemas.messages import ClusterHealth

logger = logging.getLogger(__name__)


class HealthReader:
    """Reads the driver's health; remembers the last answer for when the cluster cannot be reached."""

    def __init__(self, driver: Driver, first: ClusterHealth | None = None) -> None:
        self.driver = driver
        self.last = first or ClusterHealth(agent_version=VERSION)
        self._api_ok = True

    async def current(self) -> ClusterHealth:
        """The driver's health now; the last known one marked unreachable when the driver fails."""
        try:
            health = await self.driver.health()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._api_ok:
                logger.warning("cannot read the cluster's health: %s", exc)
            self._api_ok = False
            return msgspec.structs.replace(self.last, api_reachable=False)
        if not self._api_ok:
            logger.info("the cluster's API is reachable again")
        self._api_ok = True
        self.last = health
        return health
