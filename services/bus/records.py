"""Typed records in a key-value bucket, written compare-and-set: what every bus's buckets offer."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic

from schemas.errors import Conflict, Internal
from schemas.messages import M


@dataclass(frozen=True)
class Latest(Generic[M]):
    """The newest entry among the keys a pattern matches."""

    key: str
    record: M | None
    """None for a deletion marker (or a stored record this version cannot read)."""
    revision: int


class Records(ABC, Generic[M]):
    """Records of one type under string keys. Every write but ``put`` is compare-and-set on a revision."""

    type: type[M]

    @abstractmethod
    async def get(self, key: str) -> tuple[M, int] | None:
        """The record and its revision, or None."""

    @abstractmethod
    async def create(self, key: str, value: M) -> int:
        """Create ``key``; raise Conflict if it exists (atomic: two creators, one winner)."""

    @abstractmethod
    async def update(self, key: str, value: M, revision: int) -> int:
        """Write ``key`` only if it is still at ``revision``; raise Conflict otherwise."""

    @abstractmethod
    async def put(self, key: str, value: M) -> int:
        """Write ``key`` whatever its revision (for keys only this writer ever writes)."""

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove ``key``, keeping its history (a later ``create`` succeeds)."""

    @abstractmethod
    async def purge(self, key: str) -> None:
        """Remove ``key`` and its history."""

    @abstractmethod
    async def latest(self, pattern: str) -> Latest[M] | None:
        """The newest entry (deletion markers included) of the keys ``pattern`` matches, where a ``*`` token
        stands for any one token; None when no key matches. One request, whatever the number of keys."""

    @abstractmethod
    async def write_over(self, key: str, value: M, guard: str, revision: int) -> int:
        """Write ``key`` only if the newest entry of the keys ``guard`` matches (``key`` among them) is still at
        ``revision`` (0: none); Conflict otherwise. One compare-and-set over a family of keys: two writers of
        one name under different first tokens cannot both succeed."""

    @abstractmethod
    async def items(self, timeout: float = 10.0) -> dict[str, M]:
        """Every live record, read in one pass."""

    async def items_under(self, prefix: str, timeout: float = 10.0) -> dict[str, M]:
        """Every live record whose key starts with ``prefix``, a whole first token and its dot (``"c1."``).
        Buckets that can read those keys alone do (``Bucket``); this default reads them all."""
        return {key: value for key, value in (await self.items(timeout)).items() if key.startswith(prefix)}

    async def keys(self) -> list[str]:
        return list(await self.items())

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
