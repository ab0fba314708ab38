"""Ending sessions: forgotten here at once; the notice to the other API replicas is best effort and bounded."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import Authorize, Decision, MembershipChanged, Principal, SessionsEnded, encode
from services.api import auth
from services.api.auth import EVERYTHING, Change, Platform
from services.api.service import change_noticed
from services.bus import Bus, Delivery


async def _turns(n: int = 10) -> None:
    """Let every task that can run do so, ``n`` times over (a question now runs in a task of its own)."""
    for _ in range(n):
        await asyncio.sleep(0)


class _Link:
    """A stand-in bus: ``send`` fails, hangs, or records what it was given."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.sent: list[tuple[str, Any]] = []

    async def send(self, subject: str, message: Any, **_: Any) -> None:
        if self.how == "fails":
            raise ConnectionError("nats: connection closed")
        if self.how == "hangs":
            await asyncio.Event().wait()
        self.sent.append((subject, message))


def _platform(link: _Link) -> Platform:
    platform = Platform(bus=cast(Bus, link), nats_url="nats://127.0.0.1:4222")
    platform._auth_cache["tok"] = (1e18, Principal(user="bob"))
    platform._allowed[Authorize(user="bob", action="workload.read", project="p1")] = (1e18, Decision(allowed=True))
    return platform


async def test_ending_sessions_forgets_them_and_tells_the_other_replicas() -> None:
    link = _Link("works")
    platform = _platform(link)
    await platform.end_sessions()
    assert not platform._auth_cache and not platform._allowed
    assert [(s, type(m)) for s, m in link.sent] == [("tether.api.sessions.ended", SessionsEnded)]


@pytest.mark.parametrize("how", ["fails", "hangs"])
async def test_a_notice_that_cannot_go_out_is_logged_not_raised_and_bounded(
    how: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(auth, "NOTICE_TIMEOUT", 0.05)
    platform = _platform(_Link(how))
    with caplog.at_level(logging.WARNING, logger="services.api.auth"):
        await asyncio.wait_for(platform.end_sessions(), timeout=5)
    assert not platform._auth_cache and not platform._allowed
    assert "could not tell the other API replicas" in caplog.text


class _Slow:
    """A stand-in bus whose answers wait until released: a revocation can come in while a question is out.
    With ``fail_first`` the first question's answer is a failure."""

    def __init__(self, fail_first: bool = False) -> None:
        self.release = asyncio.Event()
        self.asked = 0
        self.fail_first = fail_first

    async def call(self, subject: str, message: Any, reply_type: type[Any], **_: Any) -> Any:
        self.asked += 1
        first = self.asked == 1
        await self.release.wait()
        if first and self.fail_first:
            raise Unavailable("access is restarting")
        return Principal(user="bob") if reply_type is Principal else Decision(allowed=True, role="user")


async def test_an_answer_asked_for_before_a_revocation_is_given_but_not_kept() -> None:
    link = _Slow()
    platform = Platform(bus=cast(Bus, link), nats_url="nats://127.0.0.1:4222")
    ask = Authorize(user="bob", action="workload.manage", project="p1", owner="bob")
    session = asyncio.create_task(platform.authenticate("tok"))
    decision = asyncio.create_task(platform.decide(ask))
    await _turns()  # both run up to their question, and wait for its answer
    assert link.asked == 2
    platform.forget_sessions()  # bob's token revoked while both questions were out
    link.release.set()
    assert (await session).user == "bob" and (await decision).allowed
    assert not platform._auth_cache and not platform._allowed

    # Asked after the revocation: kept as usual.
    await platform.authenticate("tok")
    await platform.decide(ask)
    assert link.asked == 4 and "tok" in platform._auth_cache and ask in platform._allowed
    await platform.authenticate("tok")
    await platform.decide(ask)
    assert link.asked == 4


async def test_a_notice_says_whose_access_ended_and_the_replica_hearing_it_reads_that() -> None:
    link = _Link("works")
    platform = _platform(link)
    await platform.end_sessions(Change(user="bob"))
    [(subject, notice)] = link.sent
    assert notice.user == "bob" and notice.project == ""
    assert change_noticed(Delivery(subject, encode(notice))) == Change(user="bob")
    members = MembershipChanged(project="p1", at=1.0)
    assert change_noticed(Delivery(subjects.MEMBERSHIP_CHANGED, encode(members))) == Change(project="p1")
    # A notice of an older replica says nothing of whose; one that cannot be read may have ended anything.
    assert change_noticed(Delivery(subject, encode(SessionsEnded(at=1.0)))) == EVERYTHING
    assert change_noticed(Delivery(subject, b"\x00not json")) == EVERYTHING


async def test_requests_that_find_an_answer_expired_together_ask_access_once() -> None:
    link = _Slow()
    platform = Platform(bus=cast(Bus, link), nats_url="nats://127.0.0.1:4222")
    ask = Authorize(user="bob", action="workload.manage", project="p1", owner="bob")
    sessions = [asyncio.create_task(platform.authenticate("tok")) for _ in range(20)]
    decisions = [asyncio.create_task(platform.decide(ask)) for _ in range(20)]
    await _turns()
    assert link.asked == 2  # one question each, not one per request
    link.release.set()
    assert {p.user for p in await asyncio.gather(*sessions)} == {"bob"}
    assert all(d.allowed for d in await asyncio.gather(*decisions))
    await platform.authenticate("tok")
    await platform.decide(ask)
    assert link.asked == 2  # and the answers are kept


async def test_a_request_after_a_revocation_does_not_wait_for_a_question_asked_before_it() -> None:
    link = _Slow()
    platform = Platform(bus=cast(Bus, link), nats_url="nats://127.0.0.1:4222")
    before = asyncio.create_task(platform.authenticate("tok"))
    await _turns()
    assert link.asked == 1
    platform.forget_sessions()  # the token revoked while the question was out
    after = asyncio.create_task(platform.authenticate("tok"))
    await _turns()
    assert link.asked == 2  # asked again: the old answer may say the token is good
    link.release.set()
    assert (await before).user == (await after).user == "bob"
    assert "tok" in platform._auth_cache  # the question asked after the revocation is kept


async def test_a_failed_question_fails_every_request_waiting_and_the_next_one_asks_again() -> None:
    link = _Slow(fail_first=True)
    platform = Platform(bus=cast(Bus, link), nats_url="nats://127.0.0.1:4222")
    waiting = [asyncio.create_task(platform.authenticate("tok")) for _ in range(5)]
    gone = asyncio.create_task(platform.authenticate("tok"))
    await _turns()
    gone.cancel()  # its client went away: the question stays out for the others
    link.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results) and link.asked == 1
    assert (await platform.authenticate("tok")).user == "bob" and link.asked == 2
