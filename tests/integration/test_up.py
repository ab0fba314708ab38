"""`tether up` end to end, as a new user runs it: start, connect, list, stop, start again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

from services.platform.natsd import free_port
from tests.harness import Proc, wait_for
from tests.upstack import TETHER, Up, cmdline, our_processes


async def test_up_connect_list_stop_and_restart_keeps_state(up: Up, tmp_path: Path) -> None:
    first = up.start()
    await up.wait_ready()
    out = first.output()
    assert f"https://127.0.0.1:{up.http_port}" in out
    assert "admin user 'admin' created" in out and "tat_" in out
    assert "driver sim" in out
    token = (up.data / "admin.token").read_text().strip()
    assert json.loads((tmp_path / "config.json").read_text())["contexts"]["data"]["token"] == token

    local = await wait_for(lambda: up.clusters().get("local", {}).get("online"), what="local online")
    assert local
    assert up.clusters()["local"]["local"] is True
    # The local agent's connect token is never on a command line (world-readable in /proc).
    for pid in our_processes(str(up.data)):
        with contextlib.suppress(OSError):
            assert b"tct." not in (Path("/proc") / str(pid) / "cmdline").read_bytes()

    connect = json.loads(up.cli("cluster", "connect", "edge-1", "--label", "env=dev", "-o", "json").stdout)
    argv = connect["agent_command"].split()
    assert argv[:3] == ["tether", "agent", "run"]
    agent = Proc(
        name="edge-1",
        argv=[*TETHER, *argv[1:], "--state-dir", str(tmp_path / "edge-1")],
        env=up.env,
        log=tmp_path / "edge-1.log",
    ).start()
    try:
        await wait_for(lambda: up.clusters()["edge-1"]["online"], what="edge-1 online")
        table = up.cli("cluster", "list").stdout
        assert "edge-1" in table and "local" in table and "Online" in table
        got = json.loads(up.cli("cluster", "get", "edge-1", "-o", "json").stdout)
        assert got["labels"] == {"env": "dev"} and got["node_count"] == 3
    finally:
        agent.stop()

    # SIGTERM stops every part cleanly: no process of ours survives.
    assert first.stop(timeout=30) == 0
    assert "stopped." in first.output()
    await wait_for(lambda: not our_processes(str(up.data)), timeout=10, what="children to exit")

    # Same data dir: same admin, same clusters; local reconnects with its stored credentials.
    second = up.start()
    await up.wait_ready()
    assert "created" not in second.output()
    assert (up.data / "admin.token").read_text().strip() == token
    clusters = await wait_for(lambda: (c := up.clusters()) and c["local"]["online"] and c, what="local online again")
    assert clusters["edge-1"]["labels"] == {"env": "dev"}
    assert clusters["edge-1"]["state"] == "connected"


async def test_cli_reports_bad_input_and_auth_clearly(up: Up) -> None:
    up.start()
    await up.wait_ready()
    bad = up.cli("cluster", "connect", "Bad_Name", check=False)
    assert bad.returncode == 1 and "invalid cluster name 'Bad_Name'" in bad.stderr
    missing = up.cli("cluster", "get", "nope", check=False)
    assert missing.returncode == 1 and "cluster 'nope' not found" in missing.stderr
    up.env["TETHER_TOKEN"] = "tat_" + "0" * 40
    unauth = up.cli("cluster", "list", check=False)
    assert unauth.returncode == 1 and "not authenticated" in unauth.stderr


async def test_second_up_on_the_same_data_dir_is_refused(up: Up) -> None:
    up.start()
    await up.wait_ready()
    res = subprocess.run(
        [
            *TETHER,
            "up",
            "--data-dir",
            str(up.data),
            "--nats-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
        ],
        env=up.env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert res.returncode == 1
    assert "another 'tether up' is already running" in res.stderr


async def test_a_second_ctrl_c_stops_at_once_and_leaves_nothing_behind(up: Up) -> None:
    first = up.start()
    await up.wait_ready()
    assert first.proc is not None
    # The API process frozen: the ordered shutdown would wait its full 10 s grace for it to drain.
    api = [pid for pid in our_processes(str(up.data)) if b"services.api" in cmdline(pid)]
    assert len(api) == 1, api
    os.kill(api[0], signal.SIGSTOP)
    first.proc.send_signal(signal.SIGINT)
    await wait_for(lambda: "stopping..." in first.output(), timeout=10, what="the ordered shutdown to begin")
    first.proc.send_signal(signal.SIGINT)
    # Well within the frozen API's 10 s grace: the second Ctrl-C killed it instead of waiting.
    await first.wait_exit(timeout=6)
    assert "stopping at once" in first.output()
    await wait_for(lambda: not our_processes(str(up.data)), timeout=10, what="every child to be gone")
    assert not our_processes(f":{up.nats_port}")
