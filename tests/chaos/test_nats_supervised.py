"""nats-server under ``tether up``: supervised like every other child, and durable by default.

``kill -9`` of the embedded nats-server: ``tether up`` restarts it, the services and the local agent reconnect,
and everything the platform acknowledged before the kill is still there.

Power loss, honestly: a ``kill -9`` alone cannot lose an acknowledged write, because the data is in the
kernel's page cache and the kernel writes it out anyway; only losing the machine (or the disk's volatile
cache) between the acknowledgement and the fsync can. Simulating that needs a block device we can cut
(device-mapper's ``dm-flakey`` or a loop device with root), which a test suite that runs anywhere does not
have. So the power-loss test checks the two things that together give the guarantee: the *running* server
(asked through its monitoring endpoint, not our config file) fsyncs before every acknowledgement
(``sync_always``), and writes acknowledged right before a ``kill -9`` of it are all there after its restart.
"""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from typing import Any

import nats
import pytest

from tests.harness import wait_for
from tests.upstack import Up, cmdline, our_processes

pytestmark = pytest.mark.chaos


def nats_pid(up: Up) -> int | None:
    for pid in our_processes(str(up.data)):
        if b"nats-server" in cmdline(pid).split(b"\0")[0]:
            return pid
    return None


def varz(up: Up) -> dict[str, Any]:
    port = re.search(r'http: "127\.0\.0\.1:(\d+)"', (up.data / "nats.conf").read_text())
    assert port, "monitoring port in nats.conf"
    with urllib.request.urlopen(f"http://127.0.0.1:{port.group(1)}/varz", timeout=2) as resp:
        return dict(json.loads(resp.read()))


async def test_kill_9_of_nats_server_under_tether_up(up: Up) -> None:
    first = up.start()
    await up.wait_ready()
    await wait_for(lambda: up.clusters().get("local", {}).get("online"), what="local online")
    up.cli("project", "create", "before", "--cluster", "local")
    up.cli("space", "create", "s1", "-p", "before", "--cluster", "local", "--wait")
    pid = nats_pid(up)
    assert pid
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: "nats-server is back" in first.output(), timeout=30, what="nats-server restarted")
    new = nats_pid(up)
    assert new and new != pid
    # Every service and the agent reconnected: the API answers, local is online, a new command applies.
    await wait_for(lambda: up.clusters().get("local", {}).get("online"), timeout=30, what="local online again")

    # A service whose connection died for good exits and is restarted by `tether up`; that takes a moment longer
    # than the registry's view of the cluster, so wait for access to answer rather than assume it already does.
    def listed() -> set[str] | None:
        res = up.cli("project", "list", "-o", "json", check=False)
        return {p["name"] for p in json.loads(res.stdout)} if res.returncode == 0 else None

    projects = await wait_for(listed, timeout=60, what="access answers again")
    assert "before" in projects
    up.cli("space", "create", "s2", "-p", "before", "--cluster", "local", "--wait")
    spaces = json.loads(up.cli("space", "list", "-p", "before", "-o", "json").stdout)
    assert {s["name"] for s in spaces} >= {"s1", "s2"}
    assert first.running, first.output()


async def test_acknowledged_writes_are_fsynced_and_survive_a_kill_9(up: Up) -> None:
    first = up.start()
    await up.wait_ready()
    js_config = varz(up)["jetstream"]["config"]
    assert js_config.get("sync_always") is True, js_config
    creds = str(up.data / "auth" / "platform.creds")
    nc = await nats.connect(f"nats://127.0.0.1:{up.nats_port}", user_credentials=creds)
    try:
        js = nc.jetstream()
        await js.add_stream(name="DURABLE", subjects=["durable.>"])
        acked = [(await js.publish(f"durable.{i}", f"w{i}".encode())).seq for i in range(200)]
    finally:
        await nc.close()
    pid = nats_pid(up)
    assert pid
    os.kill(pid, signal.SIGKILL)
    await wait_for(lambda: "nats-server is back" in first.output(), timeout=30, what="nats-server restarted")
    nc = await nats.connect(f"nats://127.0.0.1:{up.nats_port}", user_credentials=creds)
    try:
        js = nc.jetstream()
        info = await js.stream_info("DURABLE")
        assert info.state.messages == len(acked) and info.state.last_seq == acked[-1]
        last = await js.get_msg("DURABLE", acked[-1])
        assert last.data == b"w199"
    finally:
        await nc.close()
