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


class _Item:
    """What ``timeout_of`` reads of a pytest item: its closest ``timeout`` marker, the option, the ini."""

    def __init__(self, marker: float | None, option: float | None, ini: str) -> None:
        self.config = self
        self._marker, self._option, self._ini = marker, option, ini

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        assert name == "timeout"
        return None if self._marker is None else pytest.mark.timeout(self._marker).mark

    def getoption(self, name: str, default: object = None) -> float | None:
        assert name == "timeout"
        return self._option

    def getini(self, name: str) -> str:
        assert name == "timeout"
        return self._ini


@pytest.mark.parametrize(
    ("marker", "option", "ini", "expected"),
    [(60.0, 90.0, "300", 60.0), (None, 90.0, "300", 90.0), (None, None, "300", 300.0), (None, None, "", None)],
)
def test_the_timeout_is_pytest_timeouts_own(
    marker: float | None, option: float | None, ini: str, expected: float | None
) -> None:
    assert hangs.timeout_of(_Item(marker, option, ini)) == expected
