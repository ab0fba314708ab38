"""The README's quick start, run literally: every ```sh block after a ``<!-- walkthrough`` marker, in order,
as a new user would type them (``make up`` in one terminal, the rest in a bash session in another), against
a real platform on the default ports with a fresh home directory. The README cannot drift from what works."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.harness import ROOT, Abort, wait_for
from tests.upstack import our_processes

MARKER = "<!-- walkthrough"
BLOCK = re.compile(r"```sh\n(.*?)```", re.S)


def walkthrough_blocks(readme: str) -> list[str]:
    blocks = []
    for part in readme.split(MARKER)[1:]:
        found = BLOCK.search(part)
        after = part.split("-->", 1)[1].lstrip()
        assert found and after.startswith("```sh"), "a walkthrough marker must be followed by its ```sh block"
        blocks.append(found.group(1))
    return blocks


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_readme_blocks_are_found() -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 4 and blocks[0].strip().startswith("make up")


async def test_readme_quick_start_runs_literally(tmp_path: Path) -> None:
    blocks = walkthrough_blocks((ROOT / "README.md").read_text())
    for port in (4222, 8080):
        if not port_free(port):
            pytest.fail(f"port {port} is taken: the README's quick start uses the default ports")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "XDG_", "KUBECONFIG"))}
    env.update(HOME=str(home), PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    first, rest = blocks[0], blocks[1:]
    up_log = (tmp_path / "make-up.log").open("w")
    up = subprocess.Popen(  # noqa: ASYNC220 (a server for the whole test, stopped in finally)
        ["bash", "-c", first], cwd=ROOT, env=env, stdout=up_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    data = home / ".local" / "share" / "tether"
    try:

        async def ready() -> bool:
            if up.poll() is not None:
                raise Abort(f"make up exited {up.returncode}:\n{(tmp_path / 'make-up.log').read_text()}")
            # What a person waits for: the "ready" line, printed once the CLI context is written (the API answers
            # /healthz a moment before; the walkthrough once started in that moment and found no context).
            if "ready. Try:" not in (tmp_path / "make-up.log").read_text():
                return False
            ca = data / "tls" / "ca.pem"  # HTTPS by default, with the platform's own CA (made at its first start)
            try:
                async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(ca))) as http:
                    return (await http.get("https://127.0.0.1:8080/healthz")).status_code == 200
            except (httpx.HTTPError, OSError, ssl.SSLError):
                return False

        await wait_for(ready, timeout=120, what="make up to say it is ready")
        script = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + "\n".join(rest)
        (tmp_path / "walkthrough.sh").write_text(script)
        run = subprocess.run(
            ["bash", str(tmp_path / "walkthrough.sh")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=420,
        )
        said = run.stdout + run.stderr
        assert run.returncode == 0, f"the README's commands failed (exit {run.returncode}):\n{said}"
        # What the README says the commands show
        assert "cluster edge-2 is online." in said and "cluster edge-2 is offline." in said
        assert "edge-2 disconnected" in said and "cluster edge-2 removed." in said
        assert "bob@127.0.0.1:8080" in said and "switched to context 'tether'" in said
        assert "project demo deleted" in said and "user bob deleted" in said
    finally:
        with contextlib.suppress(ProcessLookupError):  # `make up` may have exited already: its error is the news
            os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)
        up_log.close()
        for pid in our_processes(str(data)) + our_processes(str(home)):
            os.kill(pid, signal.SIGKILL)
