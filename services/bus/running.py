"""Running a service process until SIGINT/SIGTERM, then shutting down in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any

from schemas.loop_reports import quiet_cancellations

logger = logging.getLogger(__name__)

EXIT_BUS_LOST = 3
"""Exit code of a service whose NATS connection was closed for good: its supervisor restarts it."""

_main: list[asyncio.Task[None]] = []
_lost: list[str] = []


def connection_lost(name: str) -> None:
    """The NATS connection ``name`` is closed for good: end the process (non-zero) so it is restarted.

    Under ``run_main`` the service shuts down in order and exits ``EXIT_BUS_LOST``; elsewhere (a service run
    inside a test) only the log line says so."""
    _lost.append(name)
    if _main:
        loop = asyncio.get_running_loop()
        _insist(loop, loop.time() + SHUTDOWN_DEADLINE)


SHUTDOWN_DEADLINE = 10.0
"""Seconds a service with a dead connection has to shut down before it is ended without ceremony."""


def _insist(loop: asyncio.AbstractEventLoop, deadline: float) -> None:
    # Cancel again until it takes: nats-py swallows a CancelledError in places (its flush), so one cancel
    # can be lost.
    pending = [task for task in _main if not task.done()]
    if not pending:
        return
    if loop.time() > deadline:
        logger.critical("exiting with code %d: the service did not shut down in time", EXIT_BUS_LOST)
        logging.shutdown()
        os._exit(EXIT_BUS_LOST)
    for task in pending:
        task.cancel()
    loop.call_later(0.5, _insist, loop, deadline)


def setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("TETHER_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # One line per HTTP request is noise in a foreground terminal.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop where it is installed (Linux, macOS), the standard one elsewhere.

    Every service spends most of its CPU in the event loop and socket I/O (a dozen NATS round trips per
    command); uvloop does that part in C. A cancellation nobody retrieved is reported at DEBUG only
    (``schemas.loop_reports``).
    """
    try:
        import uvloop
    except ImportError:
        return quiet_cancellations(asyncio.new_event_loop())
    return quiet_cancellations(uvloop.new_event_loop())


def run_main(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; the first SIGINT/SIGTERM cancels it so it can shut down cleanly."""
    setup_logging()

    async def runner() -> None:
        task = asyncio.create_task(main, name="main")
        _main.append(task)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass
        if _lost:
            # The service has shut down (its own ``finally`` ran); leave now: closing the loop would wait on
            # the dead client's tasks.
            logger.critical("exiting with code %d: NATS connection %s closed for good", EXIT_BUS_LOST, ", ".join(_lost))
            logging.shutdown()
            os._exit(EXIT_BUS_LOST)

    with asyncio.Runner(loop_factory=new_event_loop) as run:
        run.run(runner())
