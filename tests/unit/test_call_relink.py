"""A request still waiting when its link is made again is asked again at once, not after its timeout.

Before, a hello sent just before a reconnect waited its whole 30 s: the request (or its answer) went with the
old connection, and nothing told the waiting call (twenty-first stop, noticed in a test)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.identity import calls
from schemas.errors import NoReply
from schemas.messages import Empty
from tests.harness import wait_for


class Link:
    """A connection whose reconnects the test makes (``relink``)."""

    is_connected = True

    def __init__(self) -> None:
        self._next = asyncio.Event()

    def relink(self) -> None:
        done, self._next = self._next, asyncio.Event()
        done.set()

    async def relinked(self) -> None:
        await self._next.wait()


class Registry:
    """Never answers the first attempt (lost with the old link); answers the next ones."""

    def __init__(self) -> None:
        self.attempts = 0
        self.first_waiting = asyncio.Event()
        self.first_cancelled = False

    async def request(self, _conn: Any, _subject: str, _message: Any, reply_type: type[Any], timeout: float) -> Any:
        self.attempts += 1
        if self.attempts > 1:
            return reply_type()
        self.first_waiting.set()
        try:
            await asyncio.sleep(timeout)
        except asyncio.CancelledError:
            self.first_cancelled = True
            raise
        raise NoReply("no answer")


async def test_a_request_waiting_when_the_link_is_made_again_is_asked_again_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, link = Registry(), Link()
    monkeypatch.setattr(calls, "request", registry.request)
    hello = asyncio.create_task(calls.call(link, "hello", "s", Empty(), Empty, timeout=30.0))  # type: ignore[arg-type]
    async with asyncio.timeout(2):  # the old call waited out the 30 s
        await registry.first_waiting.wait()
        link.relink()
        assert await hello == Empty()
    assert registry.attempts == 2
    await wait_for(lambda: registry.first_cancelled, timeout=2, what="the abandoned attempt cancelled")


async def test_a_caller_cancelled_while_waiting_is_cancelled(monkeypatch: pytest.MonkeyPatch) -> None:
    registry, link = Registry(), Link()
    monkeypatch.setattr(calls, "request", registry.request)
    hello = asyncio.create_task(calls.call(link, "hello", "s", Empty(), Empty, timeout=30.0))  # type: ignore[arg-type]
    await registry.first_waiting.wait()
    hello.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hello
    await wait_for(lambda: registry.first_cancelled, timeout=2, what="the attempt cancelled with its caller")
    assert registry.attempts == 1
