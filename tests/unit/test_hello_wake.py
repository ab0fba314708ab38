"""An agent's hello that nobody heard is asked again as soon as the registry says it listens (its ``listening``
notice), not at the end of its backoff, also when the notice came while that attempt was on its way; and the
agent's periodic inventories wait while the link is down or a hello is awaited (the one after the hello
follows anyway)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.identity import calls
from agent.inventory import InventoryReporter
from schemas.errors import NoResponders, Unavailable
from schemas.messages import Empty, InventoryItem


class Link:
    is_connected = True

    async def relinked(self) -> None:
        await asyncio.Event().wait()  # never made again here


class Registry:
    """Answers ``request``: nobody listening for the first ``unheard`` attempts, then an answer."""

    def __init__(self, unheard: int, during: asyncio.Event | None = None) -> None:
        self.unheard = unheard
        self.attempts = 0
        self.asked = asyncio.Event()
        self.during = during
        """Set while the first attempt is on its way (the notice arriving before its no-responders)."""

    async def request(self, _conn: Any, _subject: str, _message: Any, reply_type: type[Any], _timeout: float) -> Any:
        self.attempts += 1
        self.asked.set()
        if self.attempts <= self.unheard:
            if self.during is not None and self.attempts == 1:
                self.during.set()
            raise NoResponders("no service answers")
        return reply_type()


async def say_hello(registry: Registry, wake: asyncio.Event, monkeypatch: pytest.MonkeyPatch) -> asyncio.Task[Any]:
    monkeypatch.setattr(calls, "request", registry.request)
    return asyncio.create_task(
        calls.call(Link(), "hello", "s", Empty(), Empty, timeout=5.0, not_listening=(30.0, 30.0), wake=wake)  # type: ignore[arg-type]
    )


async def test_an_unheard_hello_is_asked_again_at_once_when_the_registry_listens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    wake = asyncio.Event()
    registry = Registry(unheard=1)
    hello = await say_hello(registry, wake, monkeypatch)
    async with asyncio.timeout(2):  # the backoff alone is 15-30 s
        await registry.asked.wait()
        wake.set()
        await hello
    assert registry.attempts == 2


async def test_a_notice_that_came_during_the_unheard_attempt_is_not_lost(monkeypatch: pytest.MonkeyPatch) -> None:
    wake = asyncio.Event()
    registry = Registry(unheard=1, during=wake)
    hello = await say_hello(registry, wake, monkeypatch)
    async with asyncio.timeout(2):
        await hello
    assert registry.attempts == 2


class Stream:
    def __init__(self) -> None:
        self.reports: list[str] = []
        self.got = asyncio.Event()
        self.is_connected = True
        self.down = False
        self.refused = asyncio.Event()

    async def js_publish(self, _subject: str, message: Any, **_kw: Any) -> None:
        if self.down:
            self.refused.set()
            raise Unavailable("no acknowledgement within 30s")
        self.reports.append(message.reason)
        self.got.set()


class Cluster:
    name = "sim"

    async def inventory(self) -> tuple[InventoryItem, ...]:
        return ()


async def test_periodic_inventories_wait_while_a_hello_is_awaited_and_the_connect_one_does_not() -> None:
    stream = Stream()
    reporter = InventoryReporter(stream, "c1", "s1", Cluster(), interval=0.02)  # type: ignore[arg-type]
    looked = 0
    five_periods = asyncio.Event()
    due = False

    def periodic_due() -> bool:
        nonlocal looked
        looked += 1
        if looked >= 5:
            five_periods.set()
        return due

    reporter.periodic_due = periodic_due
    task = asyncio.create_task(reporter.run())
    try:
        async with asyncio.timeout(5):
            await five_periods.wait()  # five periods came and went
            assert stream.reports == []
            reporter.now.set()  # the hello was answered
            await stream.got.wait()
            assert stream.reports == ["connect"]
            due, stream.got = True, asyncio.Event()
            await stream.got.wait()
            assert stream.reports == ["connect", "periodic"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_periodic_inventory_lost_in_an_outage_is_not_retried_once_a_hello_is_awaited() -> None:
    stream = Stream()
    reporter = InventoryReporter(stream, "c1", "s1", Cluster(), interval=3600.0)  # type: ignore[arg-type]
    due = True
    reporter.periodic_due = lambda: due
    stream.down = True
    sending = asyncio.create_task(reporter.send("periodic"))
    async with asyncio.timeout(5):
        await stream.refused.wait()
        due = False  # the link dropped and came back: the reconnect's hello is awaited
        await sending  # given up at once, not retried for the rest of its interval
    stream.down = False
    assert stream.reports == []
