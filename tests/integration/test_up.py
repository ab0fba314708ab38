"""`tether up` end to end, as a new user runs it: start, connect, list, stop, start again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.platform.natsd import free_port
from tests.harness import ROOT, Abort, Proc, wait_for

TETHER = [sys.executable, "-m", "services.cli"]


def our_processes(marker: str) -> list[int]:
    """Pids whose command line or environment mentions ``marker`` (our data dir or NATS port)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            blob = (entry / "cmdline").read_bytes() + (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in blob:
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


class Up:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.data = tmp / "data"
        self.nats_port = free_port()
        self.http_port = free_port()
        self.env = dict(
            os.environ,
            TETHER_CONFIG=str(tmp / "config.json"),
            TETHER_LOG_LEVEL="INFO",
            TETHER_SWEEP_INTERVAL="0.2",
            TETHER_FLUSH_INTERVAL="0.5",
            HOME=str(tmp / "home"),
        )
        self.env.pop("TETHER_SERVER", None)
        self.env.pop("TETHER_TOKEN", None)
        self.env.pop("KUBECONFIG", None)
        self.proc: Proc | None = None
        self.runs = 0
        self.extra_args: list[str] = []

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    def verify(self) -> ssl.SSLContext:
        """The platform's own CA (made at its first start), the only one its API's certificate verifies with."""
        return ssl.create_default_context(cafile=str(self.data / "tls" / "ca.pem"))

    def start(self) -> Proc:
        self.runs += 1
        self.proc = Proc(
            name=f"up-{self.runs}",
            argv=[
                *TETHER,
                "up",
                "--data-dir",
                str(self.data),
                "--nats-port",
                str(self.nats_port),
                "--http-port",
                str(self.http_port),
                "--heartbeat-interval",
                "0.5",
                "--offline-after",
                "2",
                *self.extra_args,
            ],
            env=self.env,
            log=self.tmp / f"up-{self.runs}.log",
        ).start()
        return self.proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        res = subprocess.run([*TETHER, *args], env=self.env, capture_output=True, text=True, cwd=ROOT, timeout=60)
        if check:
            assert res.returncode == 0, res.stderr + res.stdout
        return res

    def clusters(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in json.loads(self.cli("cluster", "list", "-o", "json").stdout)}

    async def wait_ready(self) -> None:
        assert self.proc is not None
        proc = self.proc

        def ready() -> bool:
            if not proc.running:
                raise Abort(f"tether up exited:\n{proc.output()}")
            return "ready." in proc.output()

        await wait_for(ready, timeout=60, what="tether up to be ready")
        resp = httpx.get(f"{self.api}/healthz", verify=self.verify())
        assert resp.status_code == 200


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    u = Up(tmp_path)
    yield u
    if u.proc:
        u.proc.stop(timeout=20)
    for pid in our_processes(str(u.data)) + our_processes(f":{u.nats_port}"):
        os.kill(pid, signal.SIGKILL)


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
