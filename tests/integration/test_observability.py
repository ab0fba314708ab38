"""One trace follows a change from the API through lifecycle and the agent and back; metrics are scraped."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import urllib.request
from pathlib import Path
from typing import Any

from schemas import subjects
from services.platform.natsd import free_port
from tests.harness import Stack, wait_for


def spans(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_trace_from_api_call_to_agent_and_back(tmp_path: Path) -> None:
    traces = tmp_path / "traces.jsonl"
    stack = Stack(tmp=tmp_path, env_overrides={"TETHER_TRACE_FILE": str(traces)})
    try:
        await stack.start()
        await stack.connected("c1", tmp_path / "c1")
        await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
        trace_id = secrets.token_hex(16)
        parent = f"00-{trace_id}-{secrets.token_hex(8)}-01"
        async with stack.http() as http:
            resp = await http.post("/api/v1/projects/p1/spaces", json={"name": "s1"}, headers={"traceparent": parent})
            assert resp.status_code == 201, resp.text
        await stack.wait_synced("space", "p1", "s1")

        def services_in_trace() -> set[str] | None:
            mine = [s for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace_id}"]
            names = {s["resource"]["attributes"]["service.name"] for s in mine}
            wanted = {"tether-api", "tether-lifecycle", "tether-agent"}
            recorded = any(s["name"] == subjects.Lifecycle.AGENT_RESULT for s in mine)
            return names if wanted <= names and recorded else None

        found = await wait_for(services_in_trace, timeout=15, what="the API, lifecycle and agent spans of one trace")
        assert {"tether-api", "tether-lifecycle", "tether-agent"} <= found
        mine = [s for s in spans(traces) if s["context"]["trace_id"] == f"0x{trace_id}"]
        names = {s["name"] for s in mine}
        assert "POST /api/v1/projects/{project}/spaces" in names
        assert "tether.svc.lifecycle.workload.create" in names
        assert any(n.startswith(f"agent apply {subjects.desired_prefix('c1')}c1.space.p1.s1") for n in names)
        assert subjects.Lifecycle.AGENT_RESULT in names, "the agent's result request continues the trace"
    finally:
        stack.stop()


async def test_prometheus_metrics(stack: Stack, tmp_path: Path) -> None:
    ports = {}
    for name in ("lifecycle", "health", "api"):
        ports[name] = free_port()
        stack.services[name].stop()
        proc = stack.service(name)
        proc.env["TETHER_PROMETHEUS_PORT"] = str(ports[name])
        stack.services[name] = proc.start()
    await stack.wait_healthy()
    await stack.connected("c1", tmp_path / "c1")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "s1"})
    await stack.wait_synced("space", "p1", "s1")

    async def scrape(service: str, *needles: str) -> str | None:
        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[service]}/metrics", timeout=2) as resp:
                return str(resp.read().decode())

        text = await asyncio.to_thread(get)
        missing = [n for n in needles if not re.search(n, text)]
        if missing:
            raise AssertionError(f"{service} lacks {missing}")  # shown as the last failure on timeout
        return text

    lifecycle = await wait_for(
        lambda: scrape(
            "lifecycle",
            r'tether_commands_issued_total\{cluster="c1"',
            r'tether_commands_applied_total\{cluster="c1"',
            "tether_command_latency_seconds_bucket",
            r'tether_commands_pending\{cluster="c1"',
            r'tether_resyncs_total\{cluster="c1"',
        ),
        timeout=20,
        what="lifecycle metrics",
    )
    assert re.search(r'tether_commands_issued_total\{cluster="c1"[^}]*\} 1\.0', lifecycle)
    # Fleet-wide: no series per cluster (the counters and the pending gauge have those).
    assert re.search(r'tether_command_latency_seconds_bucket\{le="0.05"', lifecycle)
    assert not re.search(r"tether_command_latency_seconds_bucket\{[^}]*cluster=", lifecycle)
    await wait_for(
        lambda: scrape("health", "tether_heartbeat_lag_seconds_bucket", r"tether_clusters_online\{[^}]*\} 1\.0"),
        what="health metrics",
    )
    api = await wait_for(lambda: scrape("api", "tether_api_request_duration_seconds_bucket"), what="api metrics")
    assert 'route="/api/v1/projects/{project}/spaces"' in api
