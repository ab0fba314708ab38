"""Durable consumers handling messages side by side (real nats-server): one subject's in order, acked after
handling, and a slow message never holds the messages of other subjects fetched after it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, cast

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from services.bus.consuming import consume
from tests.harness import wait_for


async def test_one_subject_in_order_others_not_held_by_a_slow_one(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(name="T", subjects=["t.>"])
    release = asyncio.Event()
    handled: list[str] = []

    async def handler(msg: Msg) -> None:
        body = msg.data.decode()
        if body == "a1":
            await release.wait()
        handled.append(body)

    await js.publish("t.a", b"a1")
    await js.publish("t.b", b"b1")
    task = asyncio.create_task(
        consume(js, stream="T", durable="d", filter_subject="t.>", handler=handler, batch=2, concurrency=4)
    )
    try:
        await wait_for(lambda: "b1" in handled, timeout=10, what="b1 handled")
        for body in ("a2", "b2", "a3", "b3"):
            await js.publish(f"t.{body[0]}", body.encode())
        # Fetched after a1, which is still being handled: b's go on, a's wait for a1.
        await wait_for(lambda: "b3" in handled, timeout=10, what="b2 and b3 handled while a1 is not")
        assert handled == ["b1", "b2", "b3"]
        release.set()
        await wait_for(lambda: len(handled) == 6, timeout=10, what="every message handled")
        assert [h for h in handled if h[0] == "a"] == ["a1", "a2", "a3"], "one subject's in order"

        async def all_acked() -> bool:
            info = await js.consumer_info("T", "d")
            return info.num_ack_pending == 0 and info.num_pending == 0

        await wait_for(all_acked, timeout=10, what="every message acknowledged")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class _TimingOut:
    """A JetStream context whose consumers' first fetches end in asyncio's bare TimeoutError, as nats-py's do when
    a fetch's deadline runs out before its second pull; it counts the consumer's declarations."""

    def __init__(self, js: JetStreamContext, timeouts: int) -> None:
        self._js = js
        self.timeouts = timeouts
        self.declared = 0

    async def add_consumer(self, *args: Any, **kwargs: Any) -> Any:
        self.declared += 1
        return await self._js.add_consumer(*args, **kwargs)

    async def pull_subscribe_bind(self, *args: Any, **kwargs: Any) -> Any:
        sub = await self._js.pull_subscribe_bind(*args, **kwargs)
        fetch = sub.fetch

        async def timing_out(batch: int = 1, timeout: float | None = 5) -> list[Msg]:
            if self.timeouts:
                self.timeouts -= 1
                raise TimeoutError
            return await fetch(batch, timeout=timeout)

        sub.fetch = timing_out  # type: ignore[method-assign]
        return sub

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


async def test_a_fetch_that_timed_out_is_fetched_again_not_treated_as_a_failure(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    js = nc.jetstream()
    await js.add_stream(name="U", subjects=["u.>"])
    timing_out = _TimingOut(js, timeouts=3)
    handled: list[bytes] = []

    async def handler(msg: Msg) -> None:
        handled.append(msg.data)

    await js.publish("u.a", b"one")
    with caplog.at_level(logging.WARNING, logger="services.bus.consuming"):
        task = asyncio.create_task(
            consume(cast(JetStreamContext, timing_out), stream="U", durable="d", filter_subject="u.>", handler=handler)
        )
        try:
            await wait_for(lambda: handled == [b"one"], timeout=10, what="the message handled after the timeouts")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert timing_out.timeouts == 0
    assert timing_out.declared == 1, "declared again after a fetch that only timed out"
    assert "retrying" not in caplog.text
