"""``until_done``: a start-up step is tried again while the server is busy, until its deadline, and not at all
after any other error."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from nats.errors import TimeoutError as NatsTimeout

from schemas.errors import Forbidden, Unavailable
from services.bus import patience

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
