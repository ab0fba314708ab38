"""Who may reach what through the gateway, and whether its cluster is there, kept for a moment.

kubectl sends bursts (discovery alone is a dozen requests), and each request through the gateway needs the same
answers: may this member read in the project (access), is the member in the workload's members and where does it
run (lifecycle), which teams is the member in (access), is its cluster online (health). Each answer is kept for
``RESOLVE_TTL`` seconds; past half of that it is renewed in the background, so no request waits for the
renewal, and a refusal still lands within ``RESOLVE_TTL`` (a failed renewal drops the answer). A change of
access forgets them all at once (``forget``), and an answer asked for before such a change is given but never
kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from schemas import subjects
from schemas.errors import Forbidden, NotFound, TetherError
from schemas.messages import Empty, NameRequest, Presence, Principal, TeamList, WorkloadRecord, WorkloadRef
from services.api.auth import Platform, authorize

RESOLVE_TTL = 2.0
"""Seconds a member's resolved access (workload, teams, presence) is reused: kubectl sends bursts."""
MAX_KEPT = 10_000
"""Answers of each kind kept at most; beyond it they are all dropped (asked again as needed)."""


@dataclass(frozen=True)
class Access:
    """Who is calling, on what, through which cluster."""

    user: str
    teams: tuple[str, ...]
    record: WorkloadRecord

    @property
    def cluster(self) -> str:
        return self.record.spec.cluster


def is_member(record: WorkloadRecord, user: str, teams: tuple[str, ...]) -> bool:
    subjects_ = {m.subject for m in record.spec.members}
    return f"user:{user}" in subjects_ or any(f"team:{t}" in subjects_ for t in teams)


AccessKey = tuple[str, str, str, str]
"""(user, kind, project, name)."""


class Resolver:
    """The gateway's kept answers: resolved access by member and workload, teams by member, presence by cluster."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._access: dict[AccessKey, tuple[float, Access]] = {}
        self._teams: tuple[float, dict[str, tuple[str, ...]]] = (0.0, {})
        self._presence: dict[str, tuple[float, Presence | None]] = {}
        self._renewing: set[tuple[str, ...]] = set()
        self._background: set[asyncio.Task[None]] = set()

    def forget(self) -> None:
        """Access ended something (a token, a membership, a role): nothing resolved before may be reused."""
        self._access.clear()
        self._teams = (0.0, {})

    def remember(self, access: Access) -> None:
        """``access`` as it is now (its workload just woken, say)."""
        spec = access.record.spec
        self._access[(access.user, spec.kind, spec.project, spec.name)] = (time.monotonic(), access)

    async def resolve(self, who: Principal, target: str, project: str, name: str) -> Access:
        key = (who.user, target, project, name)
        hit = self._access.get(key)
        if hit and time.monotonic() - hit[0] < RESOLVE_TTL:
            self._refresh_early(key, hit[0], lambda: self.fresh_access(who, target, project, name))
            return hit[1]
        return await self.fresh_access(who, target, project, name)

    async def fresh_access(self, who: Principal, target: str, project: str, name: str) -> Access:
        """Asked now, not kept: may ``who`` read in ``project``, and are they a member of the workload?"""
        now, forgotten = time.monotonic(), self.platform.forgotten
        await authorize(self.platform, who, "workload.read", project)
        record, teams = await asyncio.gather(
            self.platform.call(
                subjects.Lifecycle.GET,
                WorkloadRef(kind=target, project=project, name=name),  # type: ignore[arg-type]
                WorkloadRecord,
            ),
            self.teams_of(who.user),
        )
        if not is_member(record, who.user, teams):
            raise Forbidden(f"user {who.user!r} is not a member of {target} {project}/{name}")
        access = Access(user=who.user, teams=teams, record=record)
        if forgotten != self.platform.forgotten:
            return access  # asked for before access changed: answered, never reused
        if len(self._access) > MAX_KEPT:
            self._access.clear()
        self._access[(who.user, target, project, name)] = (now, access)
        return access

    async def teams_of(self, user: str) -> tuple[str, ...]:
        now = time.monotonic()
        at, by_user = self._teams
        if now - at > RESOLVE_TTL:
            teams = await self.platform.call(subjects.Access.TEAM_LIST, Empty(), TeamList)
            grouped: dict[str, list[str]] = {}
            for team in teams.teams:
                for member in team.members:
                    grouped.setdefault(member, []).append(team.name)
            by_user = {u: tuple(sorted(t)) for u, t in grouped.items()}
            self._teams = (now, by_user)
        return by_user.get(user, ())

    async def presence(self, cluster: str) -> Presence | None:
        hit = self._presence.get(cluster)
        if hit and time.monotonic() - hit[0] < RESOLVE_TTL:
            self._refresh_early(("presence", cluster), hit[0], lambda: self._fresh_presence(cluster))
            return hit[1]
        return await self._fresh_presence(cluster)

    async def _fresh_presence(self, cluster: str) -> Presence | None:
        now = time.monotonic()
        try:
            found: Presence | None = await self.platform.call(
                subjects.Health.PRESENCE_GET, NameRequest(name=cluster), Presence
            )
        except NotFound:
            found = None
        if len(self._presence) > MAX_KEPT:
            self._presence.clear()
        self._presence[cluster] = (now, found)
        return found

    def _refresh_early(self, key: tuple[str, ...], at: float, fresh: Callable[[], Awaitable[object]]) -> None:
        """Past half its life, a kept answer is renewed in the background: no request waits for the renewal
        (the p99), and a refusal still lands within ``RESOLVE_TTL`` (a failed renewal drops it)."""
        if time.monotonic() - at < RESOLVE_TTL / 2 or key in self._renewing:
            return

        async def renew() -> None:
            try:
                await fresh()
            except TetherError:
                if len(key) == 2:
                    self._presence.pop(key[1], None)
                else:
                    self._access.pop(key, None)  # type: ignore[arg-type]
            finally:
                self._renewing.discard(key)

        self._renewing.add(key)
        task = asyncio.get_running_loop().create_task(renew(), name=f"gateway-renew-{key[0]}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)
