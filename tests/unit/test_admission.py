"""An endpoint's bounded queue: runs a few at once, queues a bounded number, and gives the rest appointments
spaced at the rate it serves; the wire carries the retry-after back as ``Overloaded``."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from schemas.errors import MAX_RETRY_AFTER, Overloaded, Unavailable, from_wire, parse_retry_after
from services.bus.admission import Admission, AdmissionLimits


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_runs_a_few_queues_some_and_refuses_the_rest_with_spaced_appointments() -> None:
    clock = Clock()
    admission = Admission("registry agent-bootstrap", AdmissionLimits(concurrency=2, queue=3), clock=clock)
    release = asyncio.Event()
    started = 0

    async def work() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "done"

    tasks = [asyncio.create_task(admission.run(work)) for _ in range(5)]
    await asyncio.sleep(0)
    assert started == 2, "only `concurrency` run at once"
    refusals: list[float] = []
    for _ in range(4):
        with pytest.raises(Overloaded) as refused:
            await admission.run(work)
        refusals.append(refused.value.retry_after)
    assert admission.refused == 4 and admission.admitted == 5
    # Appointments are spaced one handling apart at the rate served (2 at once, 50 ms each: 40/s), after the
    # queue has drained: the refused do not all come back at the same moment.
    gaps = [b - a for a, b in itertools.pairwise(refusals)]
    assert all(g == pytest.approx(1 / 40) for g in gaps), refusals
    assert refusals[0] >= 3 / 40, "not before the three queued have had their turn"
    release.set()
    assert await asyncio.gather(*tasks) == ["done"] * 5


async def test_a_slow_endpoint_queues_fewer_and_an_idle_one_takes_again() -> None:
    clock = Clock()
    admission = Admission("x", AdmissionLimits(concurrency=1, queue=100, max_wait=1.2), clock=clock)
    gate = asyncio.Event()

    async def slow() -> None:
        clock.now += 0.5  # each handling takes 0.5 s: 2/s
        await gate.wait()

    for _ in range(40):
        gate.set()
        await admission.run(slow)
    gate.clear()
    assert admission.rate == pytest.approx(2, rel=0.05), "the moving average learned the slower handling"
    taken = [asyncio.create_task(admission.run(slow)) for _ in range(4)]
    await asyncio.sleep(0)
    # One running and three waiting (1.5 s at 2/s): the expected wait, not the queue's size (100), bounds it.
    with pytest.raises(Overloaded):
        await asyncio.wait_for(admission.run(slow), timeout=5)
    gate.set()
    await asyncio.gather(*taken)
    # Everyone had their turn: a new request is taken at once.
    await admission.run(slow)


async def test_appointments_never_pass_the_limit() -> None:
    clock = Clock()
    admission = Admission("x", AdmissionLimits(concurrency=1, queue=0, max_retry_after=3.0), clock=clock)
    hold = asyncio.Event()
    task = asyncio.create_task(admission.run(hold.wait))
    await asyncio.sleep(0)
    retry_afters = []
    for _ in range(500):
        with pytest.raises(Overloaded) as refused:
            await admission.run(hold.wait)
        retry_afters.append(refused.value.retry_after)
    assert max(retry_afters) <= 3.0
    hold.set()
    await task


def test_retry_after_on_the_wire_is_bounded() -> None:
    error = from_wire("429", "registry is busy", "2.500")
    assert isinstance(error, Overloaded) and isinstance(error, Unavailable) and error.retryable
    assert error.retry_after == 2.5
    assert parse_retry_after("1e12") == MAX_RETRY_AFTER
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("nan") == 1.0 and parse_retry_after("soon") == 1.0 and parse_retry_after(None) == 1.0
    assert not isinstance(from_wire("503", "down", "9"), Overloaded)


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(concurrency=0)


def _result_limits() -> AdmissionLimits:
    from services.lifecycle.service import Settings

    return Settings().result_admission


def _hello_limits() -> AdmissionLimits:
    from services.registry.service import Settings

    return Settings().hello_admission


@pytest.mark.parametrize("endpoint", [_result_limits, _hello_limits], ids=["results", "hellos"])
async def test_requests_refused_after_a_stall_are_told_to_come_back_within_a_few_seconds(
    endpoint: Callable[[], AdmissionLimits],
) -> None:
    limits = endpoint()
    clock = Clock()
    admission = Admission("an agents' endpoint", limits, clock=clock)

    async def stalled() -> None:
        clock.now += 1.0  # each took a second: the server stalled

    for _ in range(40):
        await admission.run(stalled)
    assert admission.rate < 1.25 * limits.concurrency, "the stall's handling times were learnt"
    hold = asyncio.Event()
    # Every turn taken and the queue full (those beyond its room are refused at once).
    running = [asyncio.create_task(admission.run(hold.wait)) for _ in range(limits.concurrency + limits.queue)]
    await asyncio.sleep(0)
    retry_afters = []
    async with asyncio.timeout(5):  # a request admitted would wait for ``hold``: the test's failure, not a hang
        for _ in range(1000):  # a wave: every pending command's result, or every agent's hello, at once
            with pytest.raises(Overloaded) as refused:
                await admission.run(hold.wait)
            retry_afters.append(refused.value.retry_after)
    # Spaced at the stalled rate the last would come back after 1000 / concurrency s; they are asked again
    # sooner, when the rate is learnt again from the requests handled meanwhile.
    # Early in an overload, that is (the limit grows only while the overload lasts).
    assert max(retry_afters) <= (limits.first_retry_after or limits.max_retry_after) <= 5.0
    hold.set()
    await asyncio.gather(*running, return_exceptions=True)  # those the queue had no room for were refused


async def test_a_stall_counts_while_it_lasts_not_only_once_the_stalled_requests_finish() -> None:
    clock = Clock()
    limits = AdmissionLimits(concurrency=4, queue=100, max_wait=1.0, initial_handling=0.05)
    admission = Admission("lifecycle agent-result", limits, clock=clock)
    hold = asyncio.Event()
    held = [asyncio.create_task(admission.run(hold.wait)) for _ in range(4 + 10)]
    await asyncio.sleep(0)
    assert admission.expected_wait() == pytest.approx(10 * 0.05 / 4), "ten queued at the handling learnt so far"
    clock.now += 3.0  # every turn taken, and none has finished for 3 s: the server stalled
    assert admission.handling() == pytest.approx(3.0)
    with pytest.raises(Overloaded) as refused:
        await asyncio.wait_for(admission.run(hold.wait), timeout=5)
    # Ten waiting at 4 per 3 s: the refused caller comes back once they have had their turn, not into the stall.
    assert refused.value.retry_after >= 10 * 3.0 / 4
    hold.set()
    await asyncio.gather(*held)
    clock.now += 10.0  # long after the last start, but no turn is taken: idle, not stalled
    assert admission.handling() < 3.0, "with turns free, the average again"
    await admission.run(hold.wait)  # taken at once


async def test_one_slow_request_among_quick_ones_is_not_a_stall() -> None:
    clock = Clock()
    admission = Admission("x", AdmissionLimits(concurrency=4, queue=100, max_wait=1.0), clock=clock)
    slow, quick = asyncio.Event(), asyncio.Event()
    stuck = asyncio.create_task(admission.run(slow.wait))
    await asyncio.sleep(0)
    clock.now += 10.0  # one request has run for 10 s; the others start now
    running = [asyncio.create_task(admission.run(quick.wait)) for _ in range(3 + 5)]
    await asyncio.sleep(0)
    # Every turn is taken, but three started just now: the oldest's age says nothing of the rate served.
    assert admission.handling() == pytest.approx(0.05)
    queued = asyncio.create_task(admission.run(quick.wait))
    await asyncio.sleep(0)
    assert not queued.done(), "queued for a turn, not refused"
    quick.set()
    slow.set()
    await asyncio.gather(stuck, queued, *running)


async def _refuse(admission: Admission, count: int) -> list[float]:
    """``count`` requests refused now (every turn held, the queue full); their retry-afters."""
    retry_afters = []
    for _ in range(count):
        with pytest.raises(Overloaded) as refused:
            await admission.run(asyncio.Event().wait)
        retry_afters.append(refused.value.retry_after)
    return retry_afters


async def test_a_hello_storm_is_told_a_few_seconds_first_and_later_each_time_it_comes_back_refused() -> None:
    from services.registry.service import Settings

    limits = Settings().hello_admission
    assert limits.first_retry_after is not None and limits.first_retry_after < limits.max_retry_after
    clock = Clock()
    admission = Admission("registry agent-hello", limits, clock=clock)

    async def slow() -> None:
        clock.now += 2.0  # each hello took two seconds: a slow machine making every agent's consumer again

    for _ in range(60):
        await admission.run(slow)
    rate = admission.rate
    hold = asyncio.Event()
    running = [asyncio.create_task(admission.run(hold.wait)) for _ in range(limits.concurrency + limits.queue)]
    await asyncio.sleep(0)
    storm, limit, longest = 10_000, limits.first_retry_after, []
    async with asyncio.timeout(10):
        # The registry serves ~128 a second and nobody finishes meanwhile: each wave comes back after the
        # latest appointment it was given, and is refused again.
        while True:
            told = await _refuse(admission, storm)
            longest.append(max(told))
            assert max(told) <= limit, "never later than the limit of the moment"
            if limit == limits.max_retry_after:
                break
            clock.now += max(told)
            limit = min(2 * limit, limits.max_retry_after)
    # A few seconds first (a restart's slowest moment passes), then longer each time the crowd is back and
    # still does not fit: 4, 8, 16, 32, 64, 120 s, not the same few seconds for good.
    assert longest == sorted(longest) and longest[0] <= limits.first_retry_after
    assert longest[-1] > 0.8 * storm / rate, "spread over the time serving the crowd takes"
    hold.set()
    await asyncio.gather(*running, return_exceptions=True)


async def test_an_overload_that_ended_starts_the_next_one_with_short_appointments_again() -> None:
    clock = Clock()
    limits = AdmissionLimits(concurrency=1, queue=0, max_retry_after=120.0, first_retry_after=4.0)
    admission = Admission("registry agent-hello", limits, clock=clock)
    hold = asyncio.Event()
    running = asyncio.create_task(admission.run(hold.wait))
    await asyncio.sleep(0)
    for limit in (4.0, 8.0, 16.0):  # refused for a whole limit's length, three times over
        await _refuse(admission, 1)
        clock.now += limit
    assert max(await _refuse(admission, 300)) == 32.0
    clock.now += 121.0  # nobody refused for longer than the limit: that overload is over
    assert max(await _refuse(admission, 300)) <= 4.0
    hold.set()
    await running


def test_the_first_limit_is_checked() -> None:
    with pytest.raises(ValueError):
        AdmissionLimits(max_retry_after=4.0, first_retry_after=8.0)
    with pytest.raises(ValueError):
        AdmissionLimits(first_retry_after=0.0)
