"""One question out at a time per key: the API's kept answers (a token's session, an allowed decision) expire
for every request at once, and under load each request that found the answer expired asked access again (a
burst of 300 commands a second asked as often as the answer took to come back, more during a stall, when
access is slowest). Callers that find a question out now wait for its answer instead."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class OneAtATime(Generic[K, V]):
    """The questions out, by key. A caller that goes away leaves the question to the others (it is shielded)."""

    def __init__(self, what: str) -> None:
        self._what = what
        self._out: dict[K, asyncio.Task[V]] = {}

    def forget(self) -> None:
        """From now on callers ask afresh: an answer to a question asked before a revocation must not reach a
        request that came after it. Those already waiting still get theirs."""
        self._out.clear()

    async def ask(self, key: K, question: Callable[[], Awaitable[V]]) -> V:
        task = self._out.get(key)
        if task is None:
            task = asyncio.ensure_future(question())
            task.set_name(f"{self._what} question")
            self._out[key] = task
            task.add_done_callback(lambda done: self._done(key, done))
        return await asyncio.shield(task)

    def _done(self, key: K, task: asyncio.Task[V]) -> None:
        if self._out.get(key) is task:
            del self._out[key]
        if not task.cancelled():
            task.exception()  # retrieved here: every caller may have gone before the answer came
