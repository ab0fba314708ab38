"""Fixtures shared by the unit tests."""

from __future__ import annotations

import asyncio

import pytest

from services.bus import patience


@pytest.fixture
def patience_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """``services.bus.patience`` retries at once: its backoff is not what these tests are about."""
    sleep = asyncio.sleep

    async def no_sleep(_delay: float) -> None:
        await sleep(0)

    monkeypatch.setattr(patience.asyncio, "sleep", no_sleep)
