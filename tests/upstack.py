"""``tether up`` as a test drives it: a data dir, free ports, the CLI, and the processes it leaves.

Shared by every test that runs the embedded platform (the ``up`` fixture is in ``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

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


def stop_up(u: Up) -> None:
    """Stop ``tether up`` and kill anything of it that outlived the stop."""
    if u.proc:
        u.proc.stop(timeout=20)
    for pid in our_processes(str(u.data)) + our_processes(f":{u.nats_port}"):
        os.kill(pid, signal.SIGKILL)
