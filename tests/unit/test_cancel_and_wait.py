"""A stop (the agent's main task, a service's tasks) cancels until its tasks end (nats-py swallows a
cancellation in places), and never waits for them past its deadline."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from schemas import tasks


@pytest.fixture(autouse=True)
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tasks, "CANCEL_AGAIN", 0.01)


async def swallowing(times: int, cancels: list[int]) -> None:
    """Loses its first ``times`` cancellations (``cancels[1]`` when set), as a nats-py drain does, and goes on."""
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancels[0] += 1
            if cancels[0] > (cancels[1] if len(cancels) > 1 else times):
                raise


async def test_a_task_that_lost_a_cancellation_is_cancelled_again() -> None:
    cancels = [0]
    task = asyncio.create_task(swallowing(2, cancels))
    await asyncio.sleep(0)
    await tasks.cancel_and_wait([task], timeout=5)
    assert task.cancelled() and cancels == [3]


async def test_a_task_that_never_ends_is_left_after_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    cancels = [0]
    task = asyncio.create_task(swallowing(10**9, cancels), name="stubborn")
    await asyncio.sleep(0)
    await tasks.cancel_and_wait([task], timeout=0.1)
    assert not task.done() and cancels[0] >= 2
    assert "stubborn did not end" in caplog.text
    cancels.append(0)  # let the next cancellation through
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()
