"""Open gateway streams end with their member's access: which refusals end them, once per holder, and when."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from schemas.errors import Forbidden, NotFound, TetherError, Unauthenticated, Unavailable
from schemas.messages import Authorize, Decision, Principal
from services.api.auth import EVERYTHING, Change, Platform
from services.api.gateway import Gateway
from services.api.gateway_holds import AccessEnded, Holder, OpenStreams, ending
from services.bus import Bus
from services.bus.gateway import GatewayLink, GatewayStream
from tests.harness import wait_for

LINK = GatewayLink(None, api_id="api1")


def _holder(user: str, name: str = "s1", token: str = "", project: str = "p1") -> Holder:
    return Holder(token=token or f"tok-{user}", user=user, target="space", project=project, name=name)


def _stream() -> GatewayStream:
    return LINK.open("edge-1", 16)


class _Checks:
    """Access as the holds see it: a refusal (or an outage) per user, and every question asked."""

    def __init__(self, refusals: dict[str, Exception]) -> None:
        self.refusals = refusals
        self.asked: list[Holder] = []

    async def __call__(self, holder: Holder) -> None:
        self.asked.append(holder)
        if (refusal := self.refusals.get(holder.user)) is not None:
            raise refusal


class _Ended:
    """What the holds reported ended: (user, stream id, what, reason)."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str, str, str]] = []

    async def __call__(self, holder: Holder, stream: GatewayStream, what: str, reason: str) -> None:
        self.told.append((holder.user, stream.id, what, reason))


async def _ended(stream: GatewayStream) -> str | None:
    """The stream's end as its reader sees it (None: still open)."""
    try:
        await stream.next(0.01)
    except AccessEnded as exc:
        return str(exc)
    except Exception:
        return None
    return None


@pytest.mark.parametrize(
    ("refusal", "said"),
    [
        (Unauthenticated("token revoked"), "the API token is no longer valid (token revoked)"),
        (Forbidden("user 'bob' is not a member of project 'p1'"), "user 'bob' is not a member of project 'p1'"),
        (NotFound("space p1/s1 not found"), "space p1/s1 not found"),
    ],
)
def test_a_refusal_ends_streams_with_its_reason(refusal: TetherError, said: str) -> None:
    assert ending(refusal) == said


@pytest.mark.parametrize("outage", [Unavailable("access is not answering"), TimeoutError(), ConnectionError()])
def test_a_check_that_could_not_be_made_ends_nothing(outage: Exception) -> None:
    assert ending(outage) is None


async def test_a_round_ends_only_the_refused_holders_streams_asking_once_per_holder() -> None:
    checks = _Checks({"bob": Forbidden("user 'bob' is not a member of project 'p1'"), "dan": Unavailable("away")})
    told = _Ended()
    holds = OpenStreams(checks, told)
    bob, carol, dan = _holder("bob"), _holder("carol"), _holder("dan")
    streams = {who: [_stream(), _stream()] for who in ("bob", "carol", "dan")}
    for who, holder in (("bob", bob), ("carol", carol), ("dan", dan)):
        for stream in streams[who]:
            holds.hold(holder, stream, f"GET /api/v1/namespaces/x/pods/{stream.id}/exec")

    assert await holds.recheck() == 2
    assert sorted(h.user for h in checks.asked) == ["bob", "carol", "dan"], "one question per holder"
    for stream in streams["bob"]:
        assert await _ended(stream) == "access ended: user 'bob' is not a member of project 'p1'"
    for stream in streams["carol"] + streams["dan"]:  # allowed, or access away: kept
        assert await _ended(stream) is None
    assert len(holds) == 4, "the ended streams are no longer held"
    reason = "user 'bob' is not a member of project 'p1'"
    assert told.told == [("bob", s.id, f"GET /api/v1/namespaces/x/pods/{s.id}/exec", reason) for s in streams["bob"]]
    assert "tok-bob" not in repr(bob), "a holder's token never reaches a log line"


async def test_a_stream_closed_during_the_round_is_not_ended_again_and_a_lost_record_stops_nothing() -> None:
    gone, kept = _stream(), _stream()
    ended: list[str] = []

    async def refuse(holder: Holder) -> None:
        holds.release(gone)  # its client went away while access was being asked
        raise Unauthenticated("token revoked")

    async def record(holder: Holder, stream: GatewayStream, what: str, reason: str) -> None:
        ended.append(stream.id)
        raise RuntimeError("the audit stream is full")

    holds = OpenStreams(refuse, record)
    holds.hold(_holder("bob"), gone, "GET /a")
    holds.hold(_holder("bob"), kept, "GET /b")
    assert await holds.recheck() == 1
    assert ended == [kept.id]
    assert await _ended(kept) is not None and await _ended(gone) is None


async def test_a_change_starts_a_round_at_once_and_rounds_also_come_on_their_own() -> None:
    checks = _Checks({})
    holds = OpenStreams(checks, _Ended(), interval=3600)
    holds.hold(_holder("bob"), _stream(), "GET /api/v1/pods")
    runner = asyncio.create_task(holds.run(), name="holds")
    try:
        await asyncio.sleep(0.05)
        assert not checks.asked, "no round before a change or the interval"
        holds.recheck_soon()
        await wait_for(lambda: holds.rounds >= 1, timeout=5, what="a round after a change")
        assert len(checks.asked) == 1
        holds.interval = 0.05
        holds.recheck_soon()  # wakes the loop so that the shorter interval applies
        await wait_for(lambda: holds.rounds >= 4, timeout=5, what="rounds on the interval")
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_a_change_checks_only_the_holders_it_reaches() -> None:
    checks = _Checks({})
    holds = OpenStreams(checks, _Ended(), interval=3600)
    holders = {
        "bob@p1": _holder("bob"),
        "bob@p2": _holder("bob", project="p2"),
        "carol@p1": _holder("carol"),
        "dan@p3": _holder("dan", project="p3"),
    }
    for holder in holders.values():
        holds.hold(holder, _stream(), "GET /api/v1/pods?watch=1")

    async def asked_for(*changes: Change) -> list[str]:
        checks.asked.clear()
        await holds.recheck(changes)
        return sorted(f"{h.user}@{h.project}" for h in checks.asked)

    assert await asked_for(Change(project="p1")) == ["bob@p1", "carol@p1"]
    assert await asked_for(Change(user="bob")) == ["bob@p1", "bob@p2"]
    assert await asked_for(Change(project="p3"), Change(user="carol")) == ["carol@p1", "dan@p3"]
    assert await asked_for(Change(project="p9")) == []
    assert await asked_for(Change(project="p9"), EVERYTHING) == sorted(holders)
    checks.asked.clear()
    await holds.recheck()  # a round on its own (the interval): everyone
    assert sorted(f"{h.user}@{h.project}" for h in checks.asked) == sorted(holders)


async def test_changes_asked_for_meanwhile_fold_into_one_round_for_the_holders_they_reach() -> None:
    checks = _Checks({"bob": Unauthenticated("token revoked")})
    holds = OpenStreams(checks, _Ended(), interval=3600)
    bob, carol, dan = _holder("bob"), _holder("carol", project="p2"), _holder("dan", project="p3")
    streams = {h.user: _stream() for h in (bob, carol, dan)}
    for holder in (bob, carol, dan):
        holds.hold(holder, streams[holder.user], "GET /api/v1/pods?watch=1")
    holds.recheck_soon(Change(user="bob"))
    holds.recheck_soon(Change(project="p2"))
    runner = asyncio.create_task(holds.run(), name="holds")
    try:
        await wait_for(lambda: holds.rounds >= 1, timeout=5, what="the round after the changes")
        assert sorted(h.user for h in checks.asked) == ["bob", "carol"]
        assert await _ended(streams["bob"]) == "access ended: the API token is no longer valid (token revoked)"
        assert await _ended(streams["dan"]) is None
        holds.interval = 0.05
        holds.recheck_soon(Change(project="p9"))  # reaches nobody; wakes the loop for the shorter interval
        await wait_for(lambda: "dan" in [h.user for h in checks.asked], timeout=5, what="dan checked on the interval")
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner


async def test_forgetting_sessions_makes_the_gateway_forget_and_check_its_streams() -> None:
    platform = Platform(bus=cast(Bus, object()), nats_url="nats://127.0.0.1:4222")
    gateway = Gateway(platform)
    asked: list[Any] = []

    async def recheck(holder: Holder) -> None:
        asked.append(holder)
        raise Unauthenticated("token revoked")

    gateway.holds = OpenStreams(recheck, _Ended(), interval=3600)
    stream = _stream()
    gateway.holds.hold(_holder("bob"), stream, "GET /api/v1/pods")
    gateway.resolver._teams = (1e18, {"bob": ("t1",)})
    platform._allowed[Authorize(user="bob", action="workload.read", project="p1")] = (1e18, Decision(allowed=True))
    platform._auth_cache["tok-bob"] = (1e18, Principal(user="bob"))
    runner = asyncio.create_task(gateway.holds.run(), name="holds")
    try:
        platform.forget_sessions()
        assert gateway.resolver._teams == (0.0, {}) and not platform._allowed and not platform._auth_cache
        await wait_for(lambda: gateway.holds.rounds >= 1, timeout=5, what="the gateway's round after a forget")
        assert asked == [_holder("bob")]
        assert await _ended(stream) == "access ended: the API token is no longer valid (token revoked)"
    finally:
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
