"""One skeleton for every service: telemetry, connect, declarations, endpoints, ready, wait, ordered stop.

A service is its ``setup``: given a ``Runtime`` (the bus, telemetry, and places to put endpoints, tasks and
stop hooks), it declares its streams and buckets, builds its handlers and says what to serve. ``Service``
runs it as an async context manager (``stop()`` is safe to call twice); ``serve`` runs one until cancelled.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypedDict, Unpack

from opentelemetry.metrics import Meter
from opentelemetry.trace import Tracer

from schemas.tasks import cancel_and_wait
from services import VERSION
from services.bus import patience
from services.bus.interface import Bus, Endpoints, Handler, Host, Subscription
from services.bus.settings import BusSettings, ServiceSettings
from services.bus.telemetry import Telemetry

logger = logging.getLogger(__name__)

Connector = Callable[[BusSettings, str], Awaitable[Bus]]


async def nats_connector(settings: BusSettings, name: str) -> Bus:
    from services.bus.nats_bus import NatsBus

    return await NatsBus.connect(settings, name)


class Runtime:
    """What a service's ``setup`` gets: the bus, telemetry, and where to say what runs."""

    def __init__(self, name: str, bus: Bus, telemetry: Telemetry, settings: ServiceSettings) -> None:
        self.name = name
        self.bus = bus
        self.telemetry = telemetry
        self.settings = settings
        self.endpoints = Endpoints()
        """What the service answers; served once ``setup`` returns."""
        self._tasks: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = []
        self._subscriptions: list[Subscription] = []
        self._on_stop: list[Callable[[], Awaitable[None]]] = []
        self._buses: list[Bus] = []

    def tracer(self, name: str) -> Tracer:
        return self.telemetry.tracer(name)

    def meter(self, name: str) -> Meter:
        return self.telemetry.meter(name)

    def task(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``run()`` from ready until stop; if it fails, the service stops with its error."""
        self._tasks.append((f"{self.name}-{name}", run))

    def on_stop(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Call ``hook`` at stop, after endpoints, tasks and subscriptions have stopped (last added, first)."""
        self._on_stop.append(hook)

    async def subscribe(self, subject: str, handler: Handler, *, pending_limit: int | None = None) -> Subscription:
        """``bus.subscribe``, stopped before the stop hooks run."""
        sub = await self.bus.subscribe(subject, handler, pending_limit=pending_limit)
        self._subscriptions.append(sub)
        return sub

    async def connect(self, name: str, settings: BusSettings) -> Bus:
        """Another connection (another NATS user), closed at stop after the service's own hooks."""
        bus = await self.bus.another(settings, name)
        self._buses.append(bus)
        return bus


Setup = Callable[[Runtime], Awaitable[None]]


class Service:
    """One service's life: ``async with Service(...)`` starts it, leaving the block stops it in order."""

    def __init__(
        self,
        name: str,
        settings: ServiceSettings,
        setup: Setup,
        *,
        telemetry: Telemetry | None = None,
        bus: Bus | None = None,
        connector: Connector = nats_connector,
    ) -> None:
        self.name = name
        self._settings = settings
        self._setup = setup
        self._telemetry = telemetry
        self._bus = bus
        self._own_bus = bus is None
        self._connector = connector
        self.runtime: Runtime | None = None
        self.host: Host | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopped = False

    async def start(self) -> None:
        telemetry = self._telemetry or Telemetry.create(self.name, self._settings.telemetry)
        self._telemetry = telemetry
        began = time.monotonic()
        try:
            if self._bus is None:
                self._bus = await self._connector(self._settings.bus, self.name)
            connected = time.monotonic()
            runtime = Runtime(self.name, self._bus, telemetry, self._settings)
            self.runtime = runtime
            with patience.starting(self._settings.start_patience):
                await self._setup(runtime)
                self.host = await self._bus.serve(self.name, VERSION, runtime.endpoints, telemetry.tracer(__name__))
            self._tasks = [asyncio.create_task(run(), name=name) for name, run in runtime._tasks]
        except BaseException:
            await self.stop()
            raise
        # Where a slow start went (a restarted platform's services wait on a server busy with its fleet).
        logger.info(
            "%s ready (connected after %.1f s, set up in %.1f s)",
            self.name,
            connected - began,
            time.monotonic() - connected,
        )

    async def wait(self) -> None:
        """Until a task fails (raising its error) or the caller is cancelled."""
        if not self._tasks:
            await asyncio.Event().wait()
        done, _ = await asyncio.wait(self._tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
        await asyncio.Event().wait()  # every task returned: serve on

    async def stop(self) -> None:
        """Endpoints, tasks, subscriptions, stop hooks, extra connections, the bus, telemetry; once."""
        if self._stopped:
            return
        self._stopped = True
        if self.host is not None:
            await self.host.stop()
        await cancel_and_wait(self._tasks, STOP_TASKS_TIMEOUT)
        runtime = self.runtime
        if runtime is not None:
            await _each(sub.stop for sub in runtime._subscriptions)
            await _each(reversed(runtime._on_stop))
            await _each(bus.close for bus in runtime._buses)
        if self._bus is not None and self._own_bus:
            await self._bus.close()
        if self._telemetry is not None:
            self._telemetry.shutdown()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


async def _each(steps: Any) -> None:
    """Run every step, in order, each whatever the others did (a stop must not stop half way)."""
    for step in steps:
        try:
            await step()
        except Exception:
            logger.exception("stopping: %s failed", getattr(step, "__qualname__", step))


class Options(TypedDict, total=False):
    """How a service is run, besides its settings (every service's ``run`` takes them)."""

    telemetry: Telemetry | None
    """Telemetry providers to use (default: made from the settings, shut down at stop)."""
    ready: asyncio.Event | None
    """Set once the service serves."""
    bus: Bus | None
    """The bus to run on (default: connect to NATS as the settings say); kept open at stop."""


STOP_TASKS_TIMEOUT = 10.0
"""Seconds a stopping service waits for its tasks to end once cancelled (``schemas.tasks``)."""
YOUNG_COLLECTION_THRESHOLD = 10_000
"""Allocations (net of deallocations) of tracked objects between two young collections."""


def settle_heap() -> None:
    """Move everything alive once a service is set up (modules, the web app, clients) out of the garbage
    collector's sight (``gc.freeze``), after one collection so no garbage is kept with it.

    A full collection walks every tracked object: with the ~100,000 of a started service it took 70-180 ms
    of lifecycle's and the API's event loop every few seconds under load (benchmark, 1,000 agents), a pause
    every command in flight waited out. After the freeze it walks only what was made since.
    """
    gc.collect()
    gc.freeze()
    # Fewer young collections (700 allocations is the default): fewer objects promoted that die soon after,
    # so the full collections that the promotions trigger come less often; a young one stays a few ms.
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])


async def serve(name: str, settings: ServiceSettings, setup: Setup, **options: Unpack[Options]) -> None:
    """Run service ``name`` until cancelled (SIGINT/SIGTERM under ``running.run_main``), then stop it."""
    bus, telemetry = options.get("bus"), options.get("telemetry")
    async with Service(name, settings, setup, telemetry=telemetry, bus=bus) as service:
        settle_heap()
        ready = options.get("ready")
        if ready is not None:
            ready.set()
        await service.wait()
