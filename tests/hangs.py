"""What an async test was waiting on when it hangs: every asyncio task's stack, printed shortly before
pytest-timeout ends the test.

pytest-timeout prints the threads' stacks, and a hung async test's main thread is only ever in the event
loop's ``select``; the await that never returns is in a task's stack. A timer thread finds the loop in the
main thread's frames and asks it (thread-safely) to print its tasks, so the report lands in the test's
captured output."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

LEAD = 20.0
"""Seconds before pytest-timeout's deadline the tasks are printed (time for the loop to wake up and print)."""


def timeout_of(item: Any) -> float | None:
    """A test's pytest-timeout, in pytest-timeout's own order: its marker, then ``--timeout``, then the ini
    setting; None when there is none."""
    marker = item.get_closest_marker("timeout")
    if marker and marker.args:
        value = marker.args[0]
    else:
        value = item.config.getoption("timeout", None)
        value = item.config.getini("timeout") if value is None else value
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def running_loop(frame: FrameType | None) -> asyncio.AbstractEventLoop | None:
    """The event loop a thread runs, found in its stack (the ``self`` of its loop's own frames)."""
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, asyncio.AbstractEventLoop) and owner.is_running():
            return owner
        frame = frame.f_back
    return None


def print_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Every unfinished task of ``loop`` with its stack, to stderr; runs in the loop's thread."""
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    print(f"\n+++ {len(tasks)} asyncio task(s) still running, near the test's timeout +++", file=sys.stderr)
    for task in tasks:
        task.print_stack(limit=30, file=sys.stderr)


def _dump(thread_id: int) -> None:
    loop = running_loop(sys._current_frames().get(thread_id))
    if loop is not None:
        loop.call_soon_threadsafe(print_tasks, loop)


def watch(timeout: float | None) -> Iterator[None]:
    """For the duration of one test: the tasks printed ``LEAD`` seconds before ``timeout``."""
    if not timeout or timeout <= LEAD:
        yield
        return
    timer = threading.Timer(timeout - LEAD, _dump, args=(threading.get_ident(),))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
