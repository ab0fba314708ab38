"""``until_done``: a start-up step is tried again while the server is busy, until its deadline, and not at all
after any other error; the steps of one start share the start's patience, and a task the start made does not
keep it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.errors import TimeoutError as NatsTimeout

from schemas.errors import Forbidden, Unavailable
from services.bus import Runtime, Service, ServiceSettings, patience
from services.bus.memory import MemoryBus

pytestmark = pytest.mark.usefixtures("patience_without_waiting")


def failing(errors: list[Exception], result: str = "done") -> tuple[list[int], Callable[[], Awaitable[str]]]:
    calls = [0]

    async def step() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return result

    return calls, step


async def test_busy_errors_are_waited_out() -> None:
    calls, step = failing([Unavailable("no reply"), NatsTimeout(), TimeoutError()])
    assert await patience.until_done("loading", step) == "done"
    assert calls == [4]


async def test_any_other_error_ends_the_start_at_once() -> None:
    calls, step = failing([Forbidden("not allowed"), Unavailable("no reply")])
    with pytest.raises(Forbidden):
        await patience.until_done("loading", step)
    assert calls == [1]


async def test_after_the_deadline_the_busy_error_is_raised() -> None:
    calls, step = failing([Unavailable("no reply")] * 1000)
    with pytest.raises(Unavailable):
        await patience.until_done("loading", step, deadline=-1.0)
    assert calls == [1]


async def test_a_start_s_steps_are_tried_for_as_long_as_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    # Outside a start a step would give up at its first failure; inside, the start's hour holds.
    monkeypatch.setattr(patience, "START_DEADLINE", -1.0)
    calls, step = failing([Unavailable("no reply")] * 200)
    with patience.starting(3600.0):
        assert await patience.until_done("declaring", step) == "done"
    assert calls == [201]


async def test_a_start_whose_patience_ran_out_gives_up_at_its_next_failure() -> None:
    first, one = failing([NatsTimeout()] * 1000)
    with patience.starting(-1.0), pytest.raises(NatsTimeout):
        await patience.until_done("declaring", one)
    assert first == [1]


async def test_a_task_the_start_made_does_not_keep_its_patience(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(patience, "START_DEADLINE", -1.0)
    go = asyncio.Event()
    calls, step = failing([Unavailable("no reply")] * 5)

    async def later() -> str:
        await go.wait()
        return await patience.until_done("watching", step)

    with patience.starting(3600.0):
        task = asyncio.create_task(later())
    go.set()
    with pytest.raises(Unavailable):
        await task
    assert calls == [1]


async def test_a_service_s_start_is_given_its_settings_patience() -> None:
    calls, step = failing([Unavailable("no reply")] * 1000)

    async def setup(runtime: Runtime) -> None:
        await patience.until_done("loading", step)

    service = Service("svc", ServiceSettings(start_patience=-1.0), setup, bus=MemoryBus())
    with pytest.raises(Unavailable):
        await service.start()
    assert calls == [1]
