"""Sleep and the gateway, with real kubectl, platform, agent (kube driver) and API servers: using a sleeping
tenant wakes it and is served once it is Ready, or answered 503 with Retry-After and the reason after a bound;
requests through the gateway are activity for auto-sleep, written once per inventory, not once per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from schemas import subjects
from schemas.messages import WorkloadName, WorkloadRecord, decode, desired_key
from services.api.gateway_access import RESOLVE_TTL
from services.lifecycle.logic import ACTIVITY_RESOLUTION
from tests.gateway.tenant_rig import https_stack, member_tenant, phase_is
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import write_tenant_kubeconfig

pytestmark = pytest.mark.kube

WAKE_WAIT = 6
BURST = 2 * ACTIVITY_RESOLUTION
"""Seconds the burst of requests is spread over."""


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async for s in https_stack(tmp_path, request, TETHER_GATEWAY_WAKE_WAIT=str(WAKE_WAIT)):
        yield s


async def desired_state(stack: Stack, key: str) -> tuple[int, float]:
    """(the bucket's last sequence, the record's last activity) of the workload's desired-state bucket; ``key``
    is the workload's ``<kind>.<project>.<name>`` (its name's entry says its cluster, whose bucket holds it)."""
    nc = await stack.nc()
    try:
        js = nc.jetstream()
        names = await js.key_value(subjects.BUCKET_WORKLOAD_NAMES)
        cluster = decode((await names.get(key)).value or b"", WorkloadName).cluster
        kv = await js.key_value(subjects.desired_bucket(cluster))
        entry = await js.get_msg(
            subjects.desired_stream(cluster), subject=f"{subjects.desired_prefix(cluster)}{desired_key(cluster, key)}"
        )
        status = await kv.status()
        record = decode(entry.data or b"", WorkloadRecord)
        return int(status.stream_info.state.last_seq), record.last_activity
    finally:
        await nc.close()


async def test_a_sleeping_tenant_wakes_on_use_and_use_is_activity(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tenant_api_server: ControlPlane, tmp_path: Path
) -> None:
    kb, bob, ns = await member_tenant(stack, admin_api, control_plane, tenant_api_server, tmp_path, "kube-s", "sp")
    await kb.ok("get", "namespaces")

    # --- activity: a burst of requests is one write per inventory, not one per request ----------------
    seq_before, active_before = await desired_state(stack, "tenant.sp.t1")
    # Activity is written when it is at least ACTIVITY_RESOLUTION past the recorded one. That may be the
    # create's, or the kubectl call's above, recorded a moment before the burst begins; a burst within a
    # resolution of it is rightly not news (a CI run waited 20 s for any of 60 back-to-back requests, which
    # take about 0.3 s here). Spread over two resolutions, the burst's last request is news whatever came before.
    began = time.time()
    async with stack.http(bob) as http:  # type: ignore[attr-defined]
        for i in range(60):
            assert (await http.get("/kubernetes/project/sp/tenant/t1/api/v1/namespaces")).status_code == 200
            await asyncio.sleep(max(0.0, began + (i + 1) * BURST / 60 - time.time()))
    assert time.time() - began >= BURST

    async def active() -> tuple[int, float] | None:
        seq, at = await desired_state(stack, "tenant.sp.t1")
        return (seq, at) if at >= began else None

    seq_after, active_after = await wait_for(active, timeout=20, what="the requests counted as activity")
    assert active_after > active_before
    assert seq_after - seq_before < 20, f"{seq_after - seq_before} writes for 60 requests"

    # --- asleep: kubectl wakes it and is served (kubectl retries a 503 with Retry-After by itself) ----
    await stack.ok("POST", "/api/v1/projects/sp/tenants/t1/sleep", token=bob)
    await wait_for(lambda: phase_is(stack, "sp", "t1", "Sleeping"), timeout=30, what="tenant asleep")
    await asyncio.sleep(RESOLVE_TTL)  # the API's short cache of who may reach what has seen it asleep
    loop = asyncio.get_running_loop()
    began_at = loop.time()
    code, out, err = await kb.run("get", "namespaces", "-o", "name", timeout=90)
    assert code == 0, err
    assert "namespace/default" in out
    assert await phase_is(stack, "sp", "t1", "Ready")
    woke_in = loop.time() - began_at
    w = await stack.workload("tenant", "sp", "t1")
    assert w is not None and w["desired"]["state"] == "running"
    print(f"woken and served in {woke_in:.1f}s")

    # --- a wake that cannot finish within the bound: 503, Retry-After, the reason --------------------
    await stack.ok("POST", "/api/v1/projects/sp/tenants/t1/sleep", token=bob)
    await wait_for(lambda: phase_is(stack, "sp", "t1", "Sleeping"), timeout=30, what="tenant asleep again")
    await asyncio.sleep(RESOLVE_TTL)
    admin_api.delete("Secret", "vc-vcluster", ns)  # its API will not be found once it wakes
    async with stack.http(bob) as http:  # type: ignore[attr-defined]
        started = loop.time()
        resp = await http.get("/kubernetes/project/sp/tenant/t1/api/v1/namespaces", timeout=30)
        took = loop.time() - started
    assert resp.status_code == 503, resp.text
    assert int(resp.headers["retry-after"]) > 0
    body = resp.json()
    assert "waking up" in body["message"] and body["details"]["retryAfterSeconds"] > 0
    assert WAKE_WAIT - 1 < took < WAKE_WAIT + 5, took
    write_tenant_kubeconfig(admin_api, ns, tenant_api_server)  # it comes up: kubectl gets through again
    code, out, err = await kb.run("get", "namespaces", "-o", "name", timeout=90)
    assert code == 0 and "namespace/default" in out, err
