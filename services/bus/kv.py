"""A typed JetStream KV bucket holding msgspec messages, with compare-and-set updates."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic

from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError
from nats.js.kv import KeyValue

from schemas.errors import Conflict, Internal
from schemas.messages import M, decode, encode


class Bucket(Generic[M]):
    """Records of one type in one bucket. Writes are compare-and-set on the key's revision."""

    def __init__(self, kv: KeyValue, type_: type[M]) -> None:
        self.kv = kv
        self.type = type_

    async def get(self, key: str) -> tuple[M, int] | None:
        """The record and its revision, or None."""
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:
            return None
        if entry.value is None:
            return None
        return decode(entry.value, self.type), entry.revision or 0

    async def create(self, key: str, value: M) -> int:
        """Create ``key``; raise Conflict if it exists (atomic: two creators, one winner)."""
        try:
            return await self.kv.create(key, encode(value))
        except KeyWrongLastSequenceError:
            raise Conflict(f"{key!r} already exists") from None

    async def update(self, key: str, value: M, revision: int) -> int:
        """Write ``key`` only if it is still at ``revision``; raise Conflict otherwise."""
        try:
            return await self.kv.update(key, encode(value), last=revision)
        except KeyWrongLastSequenceError:
            raise Conflict(f"{key!r} changed concurrently") from None

    async def put(self, key: str, value: M) -> int:
        return await self.kv.put(key, encode(value))

    async def delete(self, key: str) -> None:
        await self.kv.delete(key)

    async def mutate(
        self,
        key: str,
        change: Callable[[M | None], M | None] | Callable[[M | None], Awaitable[M | None]],
        *,
        attempts: int = 20,
    ) -> M | None:
        """Read-modify-write with CAS, retrying on a concurrent change.

        ``change`` gets the current record (or None) and returns the new one, or
        None to write nothing. It may raise to abort.
        """
        for _ in range(attempts):
            current = await self.get(key)
            old, revision = current if current else (None, 0)
            new = change(old)
            if asyncio.iscoroutine(new):
                new = await new
            if new is None:
                return old
            try:
                if current is None:
                    await self.create(key, new)  # type: ignore[arg-type]
                else:
                    await self.update(key, new, revision)  # type: ignore[arg-type]
            except Conflict:
                continue
            return new  # type: ignore[return-value]
        raise Internal(f"gave up updating {key!r} after {attempts} concurrent changes")

    async def items(self) -> dict[str, M]:
        """Every live record, read in one pass."""
        watcher = await self.kv.watchall(ignore_deletes=True)
        out: dict[str, M] = {}
        try:
            async for entry in watcher:
                if entry is None:
                    break
                if entry.value:
                    out[entry.key] = decode(entry.value, self.type)
        finally:
            await watcher.stop()  # type: ignore[no-untyped-call]
        return out

    async def keys(self) -> list[str]:
        try:
            return list(await self.kv.keys())
        except NoKeysError:
            return []


async def open_bucket(js: JetStreamContext, name: str, type_: type[M]) -> Bucket[M]:
    return Bucket(await js.key_value(name), type_)
