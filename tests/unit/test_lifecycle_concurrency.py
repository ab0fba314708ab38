"""Lifecycle's concurrency helpers: per-object locks, and steps run side by side that all finish."""

from __future__ import annotations

import asyncio

import pytest

from services.lifecycle.concurrency import KeyedLocks, Recent, all_done


async def test_one_key_at_a_time_different_keys_side_by_side() -> None:
    locks = KeyedLocks()
    inside: dict[str, int] = {"a": 0, "b": 0}
    most: dict[str, int] = {"a": 0, "b": 0}
    both = asyncio.Event()
    order: list[str] = []

    async def work(key: str, tag: str) -> None:
        async with locks.hold(key):
            inside[key] += 1
            most[key] = max(most[key], inside[key])
            order.append(tag)
            if inside["a"] and inside["b"]:
                both.set()
            await asyncio.wait_for(both.wait(), 5)  # a holder of "a" waits until "b" is held too
            inside[key] -= 1

    await asyncio.gather(work("a", "a1"), work("a", "a2"), work("b", "b1"), work("a", "a3"))
    assert most == {"a": 1, "b": 1}, "one holder per key"
    assert [t for t in order if t.startswith("a")] == ["a1", "a2", "a3"], "waiters of one key in arrival order"
    assert locks._locks == {}, "nothing kept once nobody holds or waits"


async def test_a_cancelled_waiter_leaves_no_lock_behind() -> None:
    locks = KeyedLocks()
    release = asyncio.Event()

    async def holder() -> None:
        async with locks.hold("k"):
            await release.wait()

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter = asyncio.create_task(holder())
    await asyncio.sleep(0)
    waiter.cancel()
    release.set()
    await first
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert locks._locks == {}


async def test_all_done_waits_for_every_step_before_raising() -> None:
    finished: list[str] = []

    async def fails() -> None:
        raise ValueError("first")

    async def slow() -> None:
        await asyncio.sleep(0.05)
        finished.append("slow")

    with pytest.raises(ValueError, match="first"):
        await all_done(fails(), slow())
    assert finished == ["slow"], "the other step ran to its end before the failure was raised"
    await all_done(slow())
    assert finished == ["slow", "slow"]


def test_recent_keeps_the_most_recently_used() -> None:
    recent: Recent[int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    assert recent.get("a") == 1  # "a" is now the most recently used
    recent.put("c", 3)
    assert (recent.get("a"), recent.get("b"), recent.get("c")) == (1, None, 3)
    recent.forget("a")
    assert recent.get("a") is None and len(recent) == 1
