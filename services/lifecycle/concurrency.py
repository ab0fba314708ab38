"""Concurrency helpers of lifecycle's handlers (plain asyncio, no bus)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable


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
