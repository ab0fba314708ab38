"""The hang report (``tests/hangs.py``): the event loop found in a thread's frames, and every unfinished task
printed with the await it is stuck in."""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from tests import hangs


def test_no_loop_is_found_outside_one() -> None:
    assert hangs.running_loop(sys._getframe()) is None


async def test_the_loop_is_found_from_another_thread_and_prints_the_stuck_await(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def stuck_on_purpose() -> None:
        await asyncio.Event().wait()

    stuck = asyncio.create_task(stuck_on_purpose(), name="stuck")
    await asyncio.sleep(0)
    main = threading.get_ident()
    # From another thread while this one waits in the loop, as the timer does.
    found = await asyncio.to_thread(lambda: hangs.running_loop(sys._current_frames()[main]))
    assert found is asyncio.get_running_loop()
    hangs.print_tasks(asyncio.get_running_loop())
    stuck.cancel()
    err = capsys.readouterr().err
    assert "asyncio task(s) still running" in err
    assert "name='stuck'" in err and "in stuck_on_purpose" in err
