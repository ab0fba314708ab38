"""Concurrency helpers of lifecycle's handlers (plain asyncio, no bus): locks, overlapping steps, a bounded
memory of recent writes."""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from typing import Generic, TypeVar

V = TypeVar("V")


async def all_done(*steps: Awaitable[object]) -> None:
    """Run ``steps`` side by side and wait for every one of them; then raise the first failure, if any.

    Unlike a bare ``gather``, a failure does not return while the other steps are still running (a publish
    that is being retried finishes or gives up before the caller answers)."""
    results = await asyncio.gather(*steps, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


class KeyedLocks:
    """One lock per key, forgotten when nobody holds or waits for it (a fleet has many objects)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Recent(Generic[V]):
    """The ``size`` most recently used entries of a map; older ones are forgotten."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[str, V] = OrderedDict()

    def get(self, key: str) -> V | None:
        found = self._items.get(key)
        if found is not None:
            self._items.move_to_end(key)
        return found

    def put(self, key: str, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def forget(self, key: str) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)
