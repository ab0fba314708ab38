"""The account push at the registry's start is tried again until it is done: at a restart of the whole platform
it runs while every agent reconnects, and one update timing out ended the registry (10,000 agents). It is not
made when the server holds the same account already: an update costs nats-server seconds with 10,000 agents
connected."""

from __future__ import annotations

import asyncio

import pytest

from schemas import subjects
from schemas.credentials import jwt_claims
from schemas.errors import Unavailable
from schemas.messages import ClusterRecord
from services.bus.identity import Trust as RealTrust
from services.bus.identity import encode_jwt
from services.bus.memory import MemoryBus
from services.registry import logic, revocations
from services.registry.service import Registry, Settings


class FlakySystemBus(MemoryBus):
    """The system account's link: its first ``fails`` account updates time out."""

    def __init__(self, fails: int) -> None:
        super().__init__()
        self.fails = fails
        self.pushed: list[str] = []

    async def update_account(self, account_jwt: str) -> None:
        if self.fails:
            self.fails -= 1
            raise TimeoutError("nats: timeout")
        self.pushed.append(account_jwt)


class Trust:
    account = "ACCOUNTSEED"
    account_pub = "ACCOUNTPUB"

    def account_jwt(self, revoked: object) -> str:
        return f"account revoking {sorted(revoked)!r}"  # type: ignore[call-overload]


async def test_the_push_at_start_outlasts_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "PUSH_RETRY_BASE", 0.01)
    bus, sys_bus = MemoryBus(), FlakySystemBus(fails=3)
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord)
    registry = Registry(Settings(), bus, clusters, clusters, clusters, Trust(), sys_bus)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await registry.account.push_at_start()
    assert len(sys_bus.pushed) == 1 and sys_bus.fails == 0
    # A push asked for by a handler (a disconnect) still says it failed: its caller answers with the error.
    sys_bus.fails = 1
    with pytest.raises(TimeoutError):
        await registry.account.push()


async def test_an_update_refused_is_tried_again_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(revocations, "PUSH_RETRY_BASE", 0.01)

    class Refusing(FlakySystemBus):
        async def update_account(self, account_jwt: str) -> None:
            if self.fails:
                self.fails -= 1
                raise Unavailable("NATS refused the account update: busy")
            self.pushed.append(account_jwt)

    bus, sys_bus = MemoryBus(), Refusing(fails=2)
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord)
    registry = Registry(Settings(), bus, clusters, clusters, clusters, Trust(), sys_bus)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await registry.account.push_at_start()
    assert sys_bus.pushed


async def test_the_push_at_start_is_skipped_when_the_server_holds_the_same_account() -> None:
    trust = RealTrust.create()
    bus, sys_bus = MemoryBus(), FlakySystemBus(fails=0)
    sys_bus.account_jwt = trust.account_jwt()  # what the server was started with (its preload)
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord)
    registry = Registry(Settings(), bus, clusters, clusters, clusters, trust, sys_bus)  # type: ignore[arg-type]
    await registry.account.push_at_start()
    assert sys_bus.pushed == [], "the same account (issued at another time) is not pushed again"

    # A revocation decided while the registry was away: the held account lacks it, so it is pushed.
    record = ClusterRecord(name="c1", state="disconnected", nats_user="UAGENT", disconnected_at=1000.0)
    await clusters.create("c1", record)
    await registry.account.push_at_start()
    assert len(sys_bus.pushed) == 1
    assert jwt_claims(sys_bus.pushed[0])["nats"]["revocations"] == {"UAGENT": 1001}  # type: ignore[index]

    # A push asked for by a handler (a disconnect) is always made.
    await registry.account.push()
    assert len(sys_bus.pushed) == 2


def test_same_account_compares_the_claims_but_not_when_they_were_issued() -> None:
    trust = RealTrust.create()
    first = trust.account_jwt({"UAGENT": 5})
    claims = jwt_claims(first)
    assert claims is not None
    earlier = encode_jwt({**claims, "iat": int(claims["iat"]) - 1000}, trust.operator_signing)  # type: ignore[call-overload]
    assert earlier != first
    assert logic.same_account(first, first)
    assert logic.same_account(earlier, first)
    assert not logic.same_account(first, trust.account_jwt({"UAGENT": 6}))
    assert not logic.same_account(first, trust.account_jwt())
    assert not logic.same_account(None, first)
    assert not logic.same_account("not a jwt", first)
    assert not logic.same_account(first, "a.b.c")
