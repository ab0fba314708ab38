"""kubectl-like contexts: two platforms and two users on one machine keep their own contexts."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.upstack import Up, our_processes


@pytest.fixture
def ups(tmp_path: Path) -> Iterator[tuple[Up, Up]]:
    a, b = Up(tmp_path / "a"), Up(tmp_path / "b")
    for u in (a, b):
        # the same basename, on purpose: the second must not take the first one's context
        u.data = u.tmp / "tether"
        u.env["TETHER_CONFIG"] = str(tmp_path / "config.json")
    yield a, b
    for u in (a, b):
        if u.proc:
            u.proc.stop(timeout=20)
        for pid in our_processes(str(u.data)) + our_processes(f":{u.nats_port}"):
            os.kill(pid, signal.SIGKILL)


def config(path: Path) -> dict[str, object]:
    return dict(json.loads(path.read_text()))


async def test_two_platforms_and_two_users_keep_their_contexts(ups: tuple[Up, Up], tmp_path: Path) -> None:
    a, b = ups
    a.start()
    await a.wait_ready()
    b.start()
    await b.wait_ready()
    cfg = config(tmp_path / "config.json")
    contexts = cfg["contexts"]
    assert isinstance(contexts, dict)
    assert contexts["tether"]["server"] == a.api
    assert contexts["tether-2"]["server"] == b.api
    assert cfg["current"] == "tether-2", "a new platform's context becomes current"
    assert (tmp_path / "config.json").stat().st_mode & 0o777 == 0o600

    listing = a.cli("config", "get-contexts").stdout
    assert "tether-2" in listing and "tat_" not in listing, "tokens are never shown"
    assert a.cli("config", "current-context").stdout.strip() == "tether-2"

    # --context and TETHER_CONTEXT pick a platform for one command
    assert "local" in a.cli("--context", "tether", "cluster", "list").stdout
    a.cli("--context", "tether", "user", "create", "bob")
    missing = a.cli("--context", "tether-2", "user", "list", "-o", "name").stdout.split()
    assert "bob" not in missing and "admin" in missing
    a.env["TETHER_CONTEXT"] = "tether"
    assert "bob" in a.cli("user", "list", "-o", "name").stdout.split()
    del a.env["TETHER_CONTEXT"]

    # bob logs in to platform a: a context of his own, the admins' stay
    bob = json.loads(a.cli("--context", "tether", "token", "create", "--user", "bob", "-o", "json").stdout)["token"]
    a.cli("login", "--server", a.api, "--token", bob)
    bobs = f"bob@127.0.0.1:{a.http_port}"
    assert a.cli("config", "current-context").stdout.strip() == bobs
    assert a.cli("whoami").stdout.strip() == "bob"
    assert a.cli("--context", "tether", "whoami").stdout.strip() == "admin (platform admin)"
    a.cli(
        "login",
        "--server",
        b.api,
        "--token",
        str(contexts["tether-2"]["token"]),
        "--context",
        "b-admin",
    )
    assert set(config(tmp_path / "config.json")["contexts"]) == {"tether", "tether-2", bobs, "b-admin"}  # type: ignore[arg-type]

    # restarting platform a rewrites only its own context (even renamed), and leaves the current one alone
    a.cli("config", "rename-context", "tether", "platform-a")
    a.cli("config", "use-context", bobs)
    assert a.proc is not None and a.proc.stop(timeout=30) == 0
    a.start()
    await a.wait_ready()
    cfg = config(tmp_path / "config.json")
    assert cfg["current"] == bobs
    assert set(cfg["contexts"]) == {"platform-a", "tether-2", bobs, "b-admin"}  # type: ignore[arg-type]
    assert a.cli("whoami").stdout.strip() == "bob"

    # deleting a context; a bad name is a clear error
    a.cli("config", "delete-context", "b-admin")
    gone = a.cli("--context", "b-admin", "whoami", check=False)
    assert gone.returncode == 1 and "no context 'b-admin'" in gone.stderr
    assert a.cli("config", "use-context", "nope", check=False).returncode == 1
