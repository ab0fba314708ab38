"""An open stream is use: a tenant cluster with auto-sleep stays awake while a member's watch is open through the
gateway, longer than its ``sleep_after``, and sleeps once the stream is closed (real kubectl, platform, agent,
kube-apiserver, and a second API server standing in for the tenant's own). Watches, ``logs -f``, exec and
port-forward are all such streams (the agent counts each open stream alike, ``agent.gateway``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from tests.gateway.tenant_rig import https_stack, member_tenant, phase_is
from tests.gateway.test_streams_portforward import stop_kubectl
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube

SLEEP_AFTER = 12.0
"""Seconds idle before the tenant sleeps: above the agent's activity tick (5 s) plus an inventory (1 s here)."""


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async for s in https_stack(tmp_path, request):
        yield s


async def test_an_open_stream_keeps_its_tenant_awake(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tenant_api_server: ControlPlane, tmp_path: Path
) -> None:
    kb, _bob, _ns = await member_tenant(
        stack, admin_api, control_plane, tenant_api_server, tmp_path, "kube-a", "ac", sleep_after=SLEEP_AFTER
    )

    watch = await kb.spawn("get", "namespaces", "--watch", "-o", "name")
    try:
        assert watch.stdout is not None
        assert b"namespace/" in await asyncio.wait_for(watch.stdout.readline(), 30)
        loop = asyncio.get_running_loop()
        until = loop.time() + 2.5 * SLEEP_AFTER  # nothing but the open watch goes through the gateway meanwhile
        while loop.time() < until:
            assert await phase_is(stack, "ac", "t1", "Ready"), "the tenant slept while a member's stream was open"
            await asyncio.sleep(0.5)
    finally:
        await stop_kubectl(watch)

    # Closed: it is idle now, and sleeps (the same tenant would have slept above without the stream).
    await wait_for(
        lambda: phase_is(stack, "ac", "t1", "Sleeping"), timeout=SLEEP_AFTER + 30, what="the idle tenant asleep"
    )
