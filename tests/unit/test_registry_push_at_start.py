"""The account push at the registry's start is tried again until it is done: at a restart of the whole platform
it runs while every agent reconnects, and one update timing out ended the registry (10,000 agents)."""

from __future__ import annotations

import asyncio

import pytest

from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import ClusterRecord
from services.bus.memory import MemoryBus
from services.registry import service
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

    def account_jwt(self, revoked: object) -> str:
        return f"account revoking {sorted(revoked)!r}"  # type: ignore[call-overload]


async def test_the_push_at_start_outlasts_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "PUSH_RETRY_BASE", 0.01)
    bus, sys_bus = MemoryBus(), FlakySystemBus(fails=3)
    clusters = await bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord)
    registry = Registry(Settings(), bus, clusters, clusters, clusters, Trust(), sys_bus)  # type: ignore[arg-type]
    async with asyncio.timeout(10):
        await registry.push_revocations_at_start()
    assert len(sys_bus.pushed) == 1 and sys_bus.fails == 0
    # A push asked for by a handler (a disconnect) still says it failed: its caller answers with the error.
    sys_bus.fails = 1
    with pytest.raises(TimeoutError):
        await registry.push_revocations()


async def test_an_update_refused_is_tried_again_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "PUSH_RETRY_BASE", 0.01)

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
        await registry.push_revocations_at_start()
    assert sys_bus.pushed
