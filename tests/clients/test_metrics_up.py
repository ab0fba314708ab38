"""Findings 2 and 3 of issue 15, under ``tether up``: with ``TETHER_PROMETHEUS_PORT`` every service serves its
own scrape endpoint (the port and the next four, printed), on loopback; before, every child bound the same
port, three crashed and the platform stopped. Scraping them all finds every metric the Grafana dashboard
(compose/grafana/dashboards/tether.json) queries, read from the dashboard itself.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import urllib.request
from pathlib import Path

import httpx
import pytest

from services.platform.supervisor import SERVICES
from tests.harness import ROOT, wait_for
from tests.upstack import Up

pytestmark = pytest.mark.clients

DASHBOARD = ROOT / "compose" / "grafana" / "dashboards" / "tether.json"


def dashboard_metrics() -> set[str]:
    """Every metric name in the dashboard's queries."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                names.update(re.findall(r"\btether_[a-z_]+", node["expr"]))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(DASHBOARD.read_text()))
    return names


def free_run(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = int(probe.getsockname()[1])
        if base + count > 65535:
            continue
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no run of free ports")


def listening_on(port: int) -> set[str]:
    """The local addresses (hex, as in /proc/net/tcp) listening on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return str(resp.read().decode())


async def test_tether_up_serves_every_dashboard_metric_on_loopback(up: Up) -> None:
    base = free_run(len(SERVICES))
    up.env.update(TETHER_PROMETHEUS_PORT=str(base), TETHER_SIM_FAIL="doomed")
    proc = up.start()
    await up.wait_ready()
    out = proc.output()
    for i, name in enumerate(SERVICES):
        assert f"metrics of {name}: http://127.0.0.1:{base + i}/metrics" in out, out
    await wait_for(lambda: up.clusters().get("local", {}).get("online"), timeout=30, what="local online")

    token = (up.data / "admin.token").read_text().strip()
    async with httpx.AsyncClient(
        base_url=up.api, headers={"Authorization": f"Bearer {token}"}, timeout=10, verify=up.verify()
    ) as http:
        resp = await http.post("/api/v1/projects", json={"name": "p1", "clusters": ["local"]})
        assert resp.status_code == 201, resp.text
        for space in ("fine", "doomed"):  # one applied, one failed (TETHER_SIM_FAIL reaches the local agent)
            resp = await http.post("/api/v1/projects/p1/spaces", json={"name": space, "cluster": "local"})
            assert resp.status_code == 201, resp.text

    wanted = dashboard_metrics()
    assert {"tether_commands_failed_total", "tether_clusters_online"} <= wanted  # the dashboard was read

    async def all_there() -> bool:
        text = "\n".join(await asyncio.gather(*(asyncio.to_thread(scrape, base + i) for i in range(len(SERVICES)))))
        exposed = set(re.findall(r"^(tether_[a-z_]+)", text, re.M))
        missing = wanted - exposed
        if missing:
            raise AssertionError(f"not exposed: {sorted(missing)}")  # shown as the last failure on timeout
        return True

    await wait_for(all_there, timeout=60, interval=1, what="every dashboard metric on the scrape endpoints")
    assert "exited with code" not in proc.output(), proc.output()
    for i in range(len(SERVICES)):
        assert listening_on(base + i) == {"0100007F"}, f"port {base + i} listens beyond loopback"
