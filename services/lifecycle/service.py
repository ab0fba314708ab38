"""Lifecycle ``run``: owns the CMD work-queue stream that carries commands to agents."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from services import VERSION
from services.bus import ServiceHost, Telemetry, connect, ensure_platform_streams
from services.bus.settings import ServiceSettings
from services.bus.streams import cmd_stream, ensure_stream

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(common=ServiceSettings.from_env())


async def run(
    settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None
) -> None:
    telemetry = telemetry or Telemetry.create("lifecycle", settings.common.telemetry)
    nc = await connect(settings.common.bus, "lifecycle")
    try:
        js = nc.jetstream()
        await ensure_platform_streams(js, settings.common.bus.replicas)
        await ensure_stream(js, cmd_stream(settings.common.bus.replicas))
        async with ServiceHost(nc, "lifecycle", VERSION, telemetry.tracer(__name__)):
            logger.info("lifecycle ready")
            if ready:
                ready.set()
            await asyncio.Event().wait()
    finally:
        await nc.drain()
        telemetry.shutdown()
