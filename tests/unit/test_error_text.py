"""An exception's text in a log line or an error's description: never empty."""

from __future__ import annotations

import asyncio

from schemas.errors import Unavailable, describe


def test_an_exception_that_says_nothing_is_named_by_its_type() -> None:
    # asyncio's timeouts (a fetch, a drain, a request that got no answer) carry no text at all.
    async def timed_out() -> BaseException:
        try:
            await asyncio.wait_for(asyncio.Event().wait(), 0.001)
        except TimeoutError as exc:
            return exc
        raise AssertionError("the wait did not time out")

    exc = asyncio.run(timed_out())
    assert str(exc) == ""
    assert describe(exc) == "TimeoutError"
    assert describe(ConnectionResetError()) == "ConnectionResetError"


def test_an_exception_that_says_something_is_given_its_own_words() -> None:
    assert describe(OSError("connection refused")) == "connection refused"
    assert describe(Unavailable("lifecycle is busy")) == "lifecycle is busy"
