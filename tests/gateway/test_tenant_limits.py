"""The per-member rate limit of the gateway, through a real platform: 429 with Retry-After, per member."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.harness import Stack

BURST = 5


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    s = Stack(tmp=tmp_path, env_overrides={"TETHER_GATEWAY_RATE": "0.5", "TETHER_GATEWAY_BURST": str(BURST)})
    try:
        await s.start()
        yield s
    finally:
        s.stop()


async def test_a_member_over_the_rate_gets_429_with_retry_after_and_others_go_on(stack: Stack) -> None:
    bob, carol = await stack.user("bob"), await stack.user("carol")
    path = "/kubernetes/project/nowhere/space/s1/api/v1/namespaces/x/pods"
    async with httpx.AsyncClient(base_url=stack.api, timeout=10) as http:
        codes = []
        for _ in range(BURST + 3):
            resp = await http.get(path, headers={"Authorization": f"Bearer {bob}"})
            codes.append(resp.status_code)
        assert 429 not in codes[:BURST], codes
        assert codes[BURST:] == [429] * 3, codes
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.json()["reason"] == "TooManyRequests" and "bob" in resp.json()["message"]
        other = await http.get(path, headers={"Authorization": f"Bearer {carol}"})
        assert other.status_code != 429, "one member's limit is not another's"
        nobody = await http.get(path, headers={"Authorization": "Bearer tat_" + "0" * 48})
        assert nobody.status_code == 401, "the limit applies to members, after authentication"
