"""Fault suite: a connect storm beyond what the platform admits at once converges, and spares the healthy.

The registry is configured to take only a handful of bootstraps and hellos at a time (a platform far smaller
than the storm); everyone else is told when to come back (``Overloaded`` with a retry-after) and comes
back then, with jitter. In the end every agent is online, and meanwhile no cluster that was online and
heartbeating was marked offline.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schemas import subjects
from schemas.messages import ClusterConnectInfo, ClusterCreate
from services.bus import call
from tests.bench.fleet import Fleet
from tests.harness import Stack, wait_for

pytestmark = pytest.mark.chaos

HEALTHY = 10
STORM = 150
ADMITTED_AT_ONCE = {"TETHER_ADMISSION_CONCURRENCY": "2", "TETHER_HELLO_CONCURRENCY": "2", "TETHER_ADMISSION_QUEUE": "2"}


async def test_connect_storm_beyond_capacity_converges_without_marking_the_healthy_offline(tmp_path: Path) -> None:
    stack = Stack(tmp=tmp_path, env_overrides=ADMITTED_AT_ONCE)
    fleet: Fleet | None = None
    try:
        await stack.start()
        nc = await stack.nc()
        offline: list[str] = []

        async def went_offline(msg: object) -> None:
            offline.append(getattr(msg, "data", b"").decode(errors="replace"))

        await nc.subscribe(subjects.public_event("cluster.offline"), cb=went_offline)
        names = [f"s{i:03d}" for i in range(HEALTHY + STORM)]
        tokens: dict[str, str | None] = {}
        for name in names:
            info = await call(nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=name), ClusterConnectInfo)
            tokens[name] = info.token
        fleet = Fleet(
            server=stack.nats_url, agents=tokens, state_root=tmp_path / "fleet", log_dir=stack.tmp / "logs", workers=2
        )
        await fleet.spawn()
        healthy, storm = names[:HEALTHY], names[HEALTHY:]
        await fleet.start(healthy)
        await fleet.wait_up(healthy, timeout=60)

        async def online(wanted: list[str]) -> bool:
            clusters = (await stack.ok("GET", "/api/v1/clusters"))["items"]
            return sum(1 for c in clusters if c["name"] in wanted and c["online"]) == len(wanted)

        await wait_for(lambda: online(healthy), timeout=30, interval=0.5, what=f"{HEALTHY} healthy agents online")

        # The storm: every other agent at once, against a registry that takes four at a time.
        await fleet.start(storm)
        await fleet.wait_up(storm, timeout=240)
        await wait_for(lambda: online(names), timeout=60, interval=0.5, what=f"all {len(names)} agents online")

        assert not fleet.failed, f"agents gave up: {dict(list(fleet.failed.items())[:5])}"
        assert not offline, f"clusters marked offline during the storm: {offline[:5]}"
        # The storm was beyond capacity: the registry refused, and told when to come back.
        registry_log = (stack.tmp / "logs" / "registry.log").read_text(errors="replace")
        refused = [int(n) for n in re.findall(r"agent-bootstrap: busy, refused (\d+) request", registry_log)]
        assert sum(refused) > 0, "the registry never refused a bootstrap: the storm did not exceed capacity"
        await nc.close()
    finally:
        if fleet is not None:
            await fleet.stop()
            fleet.kill9()
        stack.stop()
