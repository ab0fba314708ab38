"""Running a service process until SIGINT/SIGTERM, then shutting down in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Coroutine
from typing import Any


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
    command); uvloop does that part in C.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_main(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main``; the first SIGINT/SIGTERM cancels it so it can shut down cleanly."""
    setup_logging()

    async def runner() -> None:
        task = asyncio.create_task(main, name="main")
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    with asyncio.Runner(loop_factory=new_event_loop) as run:
        run.run(runner())
