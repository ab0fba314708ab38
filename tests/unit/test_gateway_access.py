"""The gateway's kept answers (``services.api.gateway_access``): reused for a moment, renewed in the background,
dropped when a renewal is refused, forgotten when access changes, never kept when asked before such a change."""

from __future__ import annotations

import asyncio
import time
from typing import Any, cast

import pytest

from schemas import subjects
from schemas.errors import Forbidden
from schemas.messages import (
    Decision,
    Member,
    Presence,
    Principal,
    TeamList,
    TeamRecord,
    WorkloadRecord,
    WorkloadSpec,
)
from services.api.auth import Platform
from services.api.gateway_access import RESOLVE_TTL, Resolver
from services.bus import Bus
from tests.harness import wait_for

BOB = Principal(user="bob")


def _record(*members: str) -> WorkloadRecord:
    spec = WorkloadSpec(
        kind="tenant",
        project="p1",
        name="t1",
        cluster="c1",
        members=tuple(Member(subject=m, access="admin") for m in members),
    )
    return WorkloadRecord(spec=spec, generation=1, op_id="op-1", operation="create")


class _Bus:
    """A stand-in bus answering the gateway's three questions; counts them, and can be told to refuse or hold."""

    def __init__(self) -> None:
        self.record = _record("user:bob")
        self.allowed = True
        self.asked: list[str] = []
        self.hold: asyncio.Event | None = None

    async def call(self, subject: str, message: Any, reply_type: type[Any], **_: Any) -> Any:
        self.asked.append(subject)
        if self.hold is not None:
            await self.hold.wait()
        if subject == subjects.Access.AUTHORIZE:
            return Decision(allowed=self.allowed, reason="" if self.allowed else "bob left project p1")
        if subject == subjects.Lifecycle.GET:
            return self.record
        if subject == subjects.Access.TEAM_LIST:
            return TeamList(teams=(TeamRecord(name="ops", members=("carol",)),))
        if subject == subjects.Health.PRESENCE_GET:
            return Presence(cluster="c1", online=True)
        raise AssertionError(subject)


def _resolver() -> tuple[Resolver, Platform, _Bus]:
    bus = _Bus()
    platform = Platform(bus=cast(Bus, bus), nats_url="nats://127.0.0.1:4222", auth_cache_ttl=0.0)
    return Resolver(platform), platform, bus


async def test_an_answer_is_reused_for_a_moment_and_forgotten_when_access_changes() -> None:
    resolver, _, bus = _resolver()
    first = await resolver.resolve(BOB, "tenant", "p1", "t1")
    assert first.cluster == "c1" and first.teams == ()
    asked = len(bus.asked)
    assert await resolver.resolve(BOB, "tenant", "p1", "t1") == first
    assert len(bus.asked) == asked
    resolver.forget()
    await resolver.resolve(BOB, "tenant", "p1", "t1")
    assert bus.asked[asked:].count(subjects.Lifecycle.GET) == 1


async def test_a_member_not_in_the_workload_is_refused_and_nothing_is_kept() -> None:
    resolver, _, bus = _resolver()
    bus.record = _record("user:carol")
    with pytest.raises(Forbidden, match="not a member of tenant p1/t1"):
        await resolver.resolve(BOB, "tenant", "p1", "t1")
    bus.record = _record("user:bob")
    assert (await resolver.resolve(BOB, "tenant", "p1", "t1")).user == "bob"


async def test_an_answer_asked_before_access_changed_is_given_but_not_kept() -> None:
    resolver, platform, bus = _resolver()
    bus.hold = asyncio.Event()
    asking = asyncio.create_task(resolver.resolve(BOB, "tenant", "p1", "t1"))
    await wait_for(lambda: bus.asked, timeout=5, what="the question asked")
    platform.forget_sessions()  # the change lands while the answer is on its way
    bus.hold.set()
    assert (await asking).user == "bob"
    asked = len(bus.asked)
    await resolver.resolve(BOB, "tenant", "p1", "t1")
    assert subjects.Lifecycle.GET in bus.asked[asked:], "an answer from before the change was reused"


async def test_a_refused_renewal_drops_the_answer() -> None:
    resolver, _, bus = _resolver()
    kept_at = time.monotonic()
    await resolver.resolve(BOB, "tenant", "p1", "t1")
    # Past half the answer's life (and well inside it): the next use renews it in the background.
    half = kept_at + RESOLVE_TTL / 2
    await wait_for(lambda: time.monotonic() > half, timeout=RESOLVE_TTL, what="half the answer's life")
    bus.allowed = False
    assert (await resolver.resolve(BOB, "tenant", "p1", "t1")).user == "bob"  # served at once from what is kept
    await wait_for(lambda: not resolver._access, timeout=5, what="the refused renewal's answer dropped")
    with pytest.raises(Forbidden, match="bob left project p1"):
        await resolver.resolve(BOB, "tenant", "p1", "t1")


async def test_presence_is_reused_for_a_moment() -> None:
    resolver, _, bus = _resolver()
    assert (await resolver.presence("c1")) == Presence(cluster="c1", online=True)
    assert (await resolver.presence("c1")) is not None
    assert bus.asked.count(subjects.Health.PRESENCE_GET) == 1


async def test_a_member_through_a_team_is_let_in() -> None:
    resolver, _, bus = _resolver()
    bus.record = _record("team:ops")
    access = await resolver.resolve(Principal(user="carol"), "tenant", "p1", "t1")
    assert access.teams == ("ops",)
    with pytest.raises(Forbidden):
        await resolver.resolve(BOB, "tenant", "p1", "t1")
