"""Tenant clusters and spaces end to end: real NATS, every service and sim agents as processes."""

from __future__ import annotations

import asyncio
import json
import random
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from agent.drivers.sim import read_state
from schemas import subjects
from schemas.messages import WorkloadRecord, decode, encode
from tests.harness import Stack, wait_for


def applied(state_dir: Path) -> list[dict[str, Any]]:
    return list(read_state(state_dir)["log"])


def ops(log: list[dict[str, Any]]) -> list[str]:
    return [entry["op_id"] for entry in log]


async def project(stack: Stack, name: str = "p1", **body: Any) -> None:
    await stack.ok("POST", "/api/v1/projects", json={"name": name, **body})


async def tenant(stack: Stack, name: str, project: str = "p1", token: str | None = None, **body: Any) -> Any:
    return await stack.ok("POST", f"/api/v1/projects/{project}/tenants", token=token, json={"name": name, **body})


async def test_commands_issued_during_an_outage_apply_once_in_order(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "c1"
    agent = await stack.connected("c1", state)
    await project(stack)
    first = await tenant(stack, "t0", cluster="c1", version="v1.35")
    await stack.wait_synced("tenant", "p1", "t0")

    agent.stop()
    await stack.wait_online("c1", online=False)
    issued: list[str] = []

    def note(w: dict[str, Any]) -> None:
        issued.append(w["desired"]["op_id"])

    for name in ("t1", "t2", "t3"):
        note(await tenant(stack, name, cluster="c1", version="v1.35"))
    note(await stack.ok("POST", "/api/v1/projects/p1/tenants/t1/sleep"))
    note(await stack.ok("POST", "/api/v1/projects/p1/tenants/t2/upgrade", json={"version": "v1.36"}))
    note(await stack.ok("DELETE", "/api/v1/projects/p1/tenants/t3"))
    note(await stack.ok("POST", "/api/v1/projects/p1/tenants/t0/upgrade", json={"version": "v1.36"}))
    note(await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "s1", "cluster": "c1"}))
    t1 = await stack.workload("tenant", "p1", "t1")
    assert t1 is not None and t1["phase"] == "Pending" and not t1["in_sync"]

    stack.agent(state)  # back, with its stored credentials
    await stack.wait_online("c1")
    for name in ("t0", "t1", "t2"):
        await stack.wait_synced("tenant", "p1", name)
    await stack.wait_synced("space", "p1", "s1")
    await stack.wait_gone("tenant", "p1", "t3")

    log = applied(state)
    assert ops(log) == [first["desired"]["op_id"], *issued], "every command once, in issue order"
    objects = read_state(state)["objects"]
    assert {k: (o["state"], o["version"]) for k, o in objects.items()} == {
        "tenant/p1/t0": ("running", "v1.36"),
        "tenant/p1/t1": ("sleeping", "v1.35"),
        "tenant/p1/t2": ("running", "v1.36"),
        "space/p1/s1": ("running", ""),
    }
    phases = {w["name"]: w["phase"] for w in (await stack.ok("GET", "/api/v1/tenants"))["items"]}
    assert phases == {"t0": "Ready", "t1": "Sleeping", "t2": "Ready"}
    # Each tenant's control-plane readiness comes back in the cluster's health.

    async def planes() -> dict[str, tuple[int, int]] | None:
        seen = {c["name"]: (c["replicas"], c["ready_replicas"]) for c in (await stack.cluster("c1"))["control_planes"]}
        return seen if len(seen) == 3 else None

    assert await wait_for(planes, what="control planes in health") == {"t0": (1, 1), "t1": (0, 0), "t2": (1, 1)}


async def test_operations_superseded_during_an_outage_end_superseded(stack: Stack, tmp_path: Path) -> None:
    """Desired state is level-triggered: while its cluster is away, a tenant gets more operations than the
    bucket keeps records of it (5). Back, the agent applies what is still kept, in order, and the newest once;
    every operation it never saw ends "superseded by" the one it applied instead, in the audit trail."""
    state = tmp_path / "c1"
    agent = await stack.connected("c1", state)
    await project(stack)
    await tenant(stack, "t1", cluster="c1", version="v1.35")
    await stack.wait_synced("tenant", "p1", "t1")
    before = len(applied(state))

    agent.stop()
    await stack.wait_online("c1", online=False)
    issued: list[tuple[str, int]] = []
    for i in range(8):
        w = await stack.ok("POST", f"/api/v1/projects/p1/tenants/t1/{'sleep' if i % 2 == 0 else 'wake'}")
        issued.append((w["desired"]["op_id"], w["desired"]["generation"]))

    stack.agent(state)
    await stack.wait_online("c1")
    t1 = await stack.wait_synced("tenant", "p1", "t1")
    assert t1["desired"]["op_id"] == issued[-1][0] and t1["desired"]["state"] == "running"
    log = applied(state)[before:]
    gens = [e["generation"] for e in log]
    assert gens == sorted(set(gens)), f"applied out of order or twice: {gens}"
    assert (log[-1]["op_id"], log[-1]["generation"]) == issued[-1], "the newest is the last applied"
    ran = {e["op_id"]: e["generation"] for e in log}
    unseen = [(op, gen) for op, gen in issued if op not in ran]
    assert unseen, "more operations than the bucket keeps per object: some were never delivered"

    async def superseded() -> dict[str, str] | None:
        items = (await stack.ok("GET", "/api/v1/audit", params={"cluster": "c1"}))["items"]
        ends = {i["op_id"]: i["result"] for i in items if i["kind"] == "command" and i["result"] != "issued"}
        return ends if all(op in ends for op, _ in unseen) else None

    ends = await wait_for(superseded, what="the unseen operations to end superseded", timeout=30)
    for op, gen in unseen:
        by = ends[op].removeprefix("superseded by ")
        assert ends[op] != by and ran.get(by, 0) > gen, f"{op} (generation {gen}): {ends[op]}"
    assert not [op for op in ran if op in ends], "an applied operation was said superseded"


async def test_a_record_written_again_is_not_applied_again(stack: Stack, tmp_path: Path) -> None:
    """The agent follows the desired state: the same record written again (a copy of an operation, with its
    result folded in or not) is delivered again and found applied, never applied twice."""
    state = tmp_path / "c1"
    await stack.connected("c1", state)
    await project(stack)
    w = await tenant(stack, "t1")
    await stack.wait_synced("tenant", "p1", "t1")
    nc = await stack.nc()
    try:
        kv = await nc.jetstream().key_value(subjects.desired_bucket("c1"))
        entry = await kv.get("c1.tenant.p1.t1")
        record = decode(entry.value or b"", WorkloadRecord)
        await kv.put("c1.tenant.p1.t1", encode(msgspec.structs.replace(record, observed=None)))
        await kv.put("c1.tenant.p1.t1", entry.value or b"")

        async def drained() -> bool:
            info = await nc.jetstream().consumer_info(subjects.desired_stream("c1"), subjects.agent_consumer("c1"))
            return info.num_pending + info.num_ack_pending == 0

        await wait_for(drained, timeout=20, what="the agent to take both copies")
    finally:
        await nc.close()
    assert ops(applied(state)) == [w["desired"]["op_id"]]


@pytest.mark.chaos
async def test_agent_killed_mid_apply_applies_exactly_once(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "c1"
    slow = await stack.connected("c1", state, TETHER_SIM_APPLY_DELAY="1.0")
    await project(stack)
    w = await tenant(stack, "t1")
    await wait_for(lambda: "t1" in slow.output() or None, timeout=10, what="the apply to start")
    await __import__("asyncio").sleep(random.uniform(0.0, 1.2))  # somewhere in or just after the apply
    slow.kill9()
    stack.agent(state)
    synced = await stack.wait_synced("tenant", "p1", "t1", timeout=60)
    assert synced["phase"] == "Ready"
    assert ops(applied(state)) == [w["desired"]["op_id"]]


@pytest.mark.chaos
async def test_lifecycle_killed_between_desired_write_and_publish(stack: Stack, tmp_path: Path) -> None:
    state = tmp_path / "c1"
    await stack.connected("c1", state)
    await project(stack)
    stack.services["lifecycle"].stop()
    faulty = stack.service("lifecycle")
    faulty.env["TETHER_FAULT"] = "lifecycle-after-desired-write"
    stack.services["lifecycle"] = faulty.start()
    await stack.wait_healthy()
    resp = await stack.req("POST", "/api/v1/projects/p1/tenants", json={"name": "t1"})
    assert resp.status_code == 503  # the service died answering
    assert resp.headers["Retry-After"] == "1"  # told when to try again
    assert await faulty.wait_exit() == 137
    # The crash came after the desired state was written (the command: its agent follows it) and before its
    # audit record and event were published.
    nc = await stack.nc()
    try:
        js = nc.jetstream()
        kv = await js.key_value(subjects.desired_bucket("c1"))
        written = decode((await kv.get("c1.tenant.p1.t1")).value or b"", WorkloadRecord)
        assert written.generation == 1 and written.observed is None
        # Nothing else was needed for the command: the record is what the agent follows.
    finally:
        await nc.close()
    stack.restart_service("lifecycle")
    await stack.wait_healthy()
    synced = await stack.wait_synced("tenant", "p1", "t1")
    assert ops(applied(state)) == [synced["desired"]["op_id"]]


async def test_auto_sleep_after_inactivity(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    await project(stack)
    await tenant(stack, "idle", sleep_after=1.5)
    await tenant(stack, "busy")
    await stack.wait_synced("tenant", "p1", "idle")

    async def asleep() -> dict[str, Any] | None:
        w = await stack.workload("tenant", "p1", "idle")
        return w if w and w["phase"] == "Sleeping" and w["in_sync"] else None

    slept = await wait_for(asleep, timeout=15, what="auto-sleep")
    assert slept["desired"]["operation"] == "sleep"
    busy = await stack.workload("tenant", "p1", "busy")
    assert busy is not None and busy["desired"]["state"] == "running"
    woken = await stack.ok("POST", "/api/v1/projects/p1/tenants/idle/wake")
    assert woken["desired"]["state"] == "running"


async def test_placement_quota_and_bad_input(stack: Stack, tmp_path: Path) -> None:
    await project(stack, "empty")
    resp = await stack.req("POST", "/api/v1/projects/empty/tenants", json={"name": "t1"})
    assert resp.status_code == 409 and "no online cluster is available to project 'empty'" in resp.text

    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/clusters", json={"name": "c2", "labels": {"env": "prod"}})
    await project(stack, "q", quota={"tenants": 1}, cluster_selector={"env": "prod"})
    resp = await stack.req("POST", "/api/v1/projects/q/tenants", json={"name": "t1"})
    assert resp.status_code == 409, "c1 is online but not selected; c2 is not connected"
    await project(stack, "p1", quota={"tenants": 1, "spaces": 5})
    w = await tenant(stack, "t1", project="p1")
    assert w["cluster"] == "c1"
    resp = await stack.req("POST", "/api/v1/projects/p1/tenants", json={"name": "t2"})
    assert resp.status_code == 403
    assert "quota exceeded: project 'p1' allows 1 tenants" in resp.json()["error"]["message"]

    cases = [
        ("POST", "/api/v1/projects/nope/tenants", {"name": "x"}, 404, "project 'nope' not found"),
        ("POST", "/api/v1/projects/p1/spaces", {"name": "x", "cluster": "ghost"}, 404, "cluster 'ghost' not found"),
        ("POST", "/api/v1/projects/p1/spaces", {"name": "Bad_Name"}, 400, "invalid space name 'Bad_Name'"),
        ("POST", "/api/v1/projects/p1/spaces", {"name": "s", "version": "v1.36"}, 400, "spaces have no version"),
        ("POST", "/api/v1/projects/p1/tenants/t1/upgrade", {"version": "latest"}, 400, "invalid Kubernetes version"),
        ("POST", "/api/v1/projects/p1/tenants/t1/upgrade", {"version": "v1.30"}, 400, "unsupported Kubernetes"),
        ("GET", "/api/v1/projects/p1/tenants/nope", None, 404, "tenant 'nope' not found in project 'p1'"),
    ]
    for method, path, body, status, message in cases:
        resp = await stack.req(method, path, json=body)
        assert resp.status_code == status, (path, resp.text)
        assert message in resp.json()["error"]["message"], (path, resp.text)

    # the versions create and upgrade are checked against are published, to the API and the CLI
    published = await stack.ok("GET", "/api/v1/versions")
    assert published["versions"] == [f"v1.{m}" for m in range(31, 37)] and published["default"] == "v1.36"
    assert published["engine"].startswith("vCluster 0.36.1")
    env = {**stack.env(), "TETHER_SERVER": stack.api, "TETHER_TOKEN": stack.admin_token}
    env["TETHER_CONFIG"] = str(tmp_path / "cli.json")
    cli = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "tether"), "versions", "-o", "json", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await cli.communicate()
    assert cli.returncode == 0 and json.loads(out) == published

    await stack.wait_synced("tenant", "p1", "t1")
    await stack.ok("DELETE", "/api/v1/projects/p1/tenants/t1")
    resp = await stack.req("POST", "/api/v1/projects/p1/tenants/t1/wake")
    if resp.status_code != 404:  # not yet gone: waking a tenant being deleted is refused
        assert resp.status_code == 409 and "being deleted" in resp.json()["error"]["message"]
    await stack.wait_gone("tenant", "p1", "t1")
    listed = (await stack.ok("GET", "/api/v1/spaces"))["items"]
    assert listed == [], "no bad request created anything"
    # The name can be used again after deletion; generations continue, so the agent applies it.
    again = await tenant(stack, "t1", project="p1")
    assert again["desired"]["generation"] > w["desired"]["generation"]
    await stack.wait_synced("tenant", "p1", "t1")
