"""Typed records in a key-value bucket, written compare-and-set: what every bus's buckets offer."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic

from schemas.errors import Conflict, Internal
from schemas.messages import M

KEPT_AHEAD = 1024
"""Own writes a view remembers ahead of its watch before it forgets those the watch has passed (``View``)."""


@dataclass(frozen=True)
class Latest(Generic[M]):
    """The newest entry among the keys a pattern matches."""

    key: str
    record: M | None
    """None for a deletion marker (or a stored record this version cannot read)."""
    revision: int


Keep = Callable[[str, M], bool]
"""Which records a view keeps (by key and record); the others it leaves out as if removed."""


class View(Generic[M]):
    """A bucket's live records kept in this process: loaded once, then kept fresh by a watch of the bucket's
    writes (``watched``, in the bucket's order) and, at once, by this process's own acknowledged writes
    (``wrote``). Reads cost no bus request: a service that needs every record on its command path (a quota
    check) or on a timer (a gauge) reads them here instead of reading the whole bucket each time.

    Revisions decide: the watch delivers the bucket's writes in order, so one at or below ``position`` is old;
    an own write newer than ``position`` is applied at once and remembered until the watch brings its echo
    (then ignored) or a newer write of the key (then applied). A write of another process appears once the
    watch brings it (milliseconds; the runtimes see to it that a lost watch is noticed and resumed)."""

    def __init__(self, keep: Keep[M] | None = None) -> None:
        self._keep = keep
        self._live: dict[str, M] = {}
        self._under: dict[str, dict[str, M]] = {}
        """The live records again, by their key's first token: what ``under`` reads."""
        self._ahead: dict[str, int] = {}
        """Keys this process wrote beyond ``position``, with the revision written."""
        self.position = 0
        """The newest revision the watch has delivered."""

    def values(self) -> list[M]:
        return list(self._live.values())

    def items(self) -> dict[str, M]:
        return dict(self._live)

    def get(self, key: str) -> M | None:
        return self._live.get(key)

    def under(self, token: str) -> dict[str, M]:
        """The live records whose key's first token is ``token`` (``"c1"``: keys ``c1.…``), without looking at
        the others: one cluster's records among every cluster's costs what that cluster has."""
        return dict(self._under.get(token, {}))

    def __len__(self) -> int:
        return len(self._live)

    def wrote(self, key: str, record: M | None, revision: int) -> None:
        """This process wrote ``record`` (None: removed ``key``), acknowledged at ``revision``."""
        if revision <= self.position or revision <= self._ahead.get(key, 0):
            return  # the watch brought it or something newer already; or a newer own write is in
        if len(self._ahead) >= KEPT_AHEAD:
            # Those the watch has passed can no longer be overtaken by an older delivery (their echo was pushed
            # out of the bucket's history by a newer write, which the watch brought instead).
            self._ahead = {k: r for k, r in self._ahead.items() if r > self.position}
        self._ahead[key] = revision
        self._put(key, record)

    def watched(self, key: str, revision: int, read: Callable[[], M | None]) -> None:
        """The watch brought ``key``'s write at ``revision``; ``read`` decodes it (None: a removal), called only
        when it is applied."""
        if revision <= self.position:
            return  # delivered again (a watch resumed from an earlier place)
        self.position = revision
        mine = self._ahead.get(key)
        if mine is not None:
            if revision < mine:
                return  # older than this process's own write, applied already
            del self._ahead[key]
            if revision == mine:
                return  # the echo of that write
        self._put(key, read())

    def _put(self, key: str, record: M | None) -> None:
        token = key.partition(".")[0]
        if record is not None and (self._keep is None or self._keep(key, record)):
            self._live[key] = record
            self._under.setdefault(token, {})[key] = record
        elif self._live.pop(key, None) is not None:
            group = self._under[token]
            del group[key]
            if not group:
                del self._under[token]

    async def caught_up(self, timeout: float = 5.0) -> None:
        """Return once every write acknowledged to anyone before this call is in the view (Unavailable after
        ``timeout``): for a read that must see another replica's write made just before, such as a list right
        after a create answered by another replica. One request for the bucket's newest revision, no
        deliveries. A view that sees every write as it is made (the memory bus's) is always caught up."""

    async def stop(self) -> None:
        """Stop the watch (the records stay readable, no longer kept fresh)."""


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

    @abstractmethod
    async def view(self, keep: Keep[M] | None = None) -> View[M]:
        """A ``View`` of this bucket, loaded (Unavailable when it could not be within the bucket's read timeout);
        ``keep`` leaves records out of it. Stop it with ``View.stop``."""

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
