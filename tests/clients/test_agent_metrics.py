"""Finding 3 of issue 15, the agent's half: it exports its own metrics (commands applied and failed, apply
latency, reconnects, heartbeat send lag), here scraped from its optional endpoint on loopback."""

from __future__ import annotations

import asyncio
import re
import urllib.request
from pathlib import Path

import pytest

from services.platform.natsd import free_port
from tests.harness import Stack, wait_for

pytestmark = pytest.mark.clients

WANTED = (
    r"tether_agent_commands_applied_total\S* 1\.0",
    r"tether_agent_commands_failed_total\S* 1\.0",
    r"tether_agent_apply_duration_seconds_bucket",
    r"tether_agent_reconnects_total",
    r"tether_agent_heartbeat_send_lag_seconds_bucket",
)


async def test_agent_exports_its_own_metrics(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    await stack.connected("c1", tmp_path / "c1", TETHER_SIM_FAIL="doomed", TETHER_AGENT_PROMETHEUS_PORT=str(port))
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"]})
    for space in ("fine", "doomed"):
        await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": space, "cluster": "c1"})

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return str(resp.read().decode())

    async def all_there() -> bool:
        text = await asyncio.to_thread(scrape)
        missing = [w for w in WANTED if not re.search(w, text)]
        if missing:
            raise AssertionError(f"missing {missing}")
        return True

    await wait_for(all_there, timeout=30, interval=0.5, what="the agent's metrics")
