"""The CLI's contexts file (``$TETHER_CONFIG`` or ``~/.config/tether/config.json``)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path


def config_path() -> Path:
    if env := os.environ.get("TETHER_CONFIG"):
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tether" / "config.json"


@dataclass(frozen=True)
class Context:
    server: str
    token: str


class NotLoggedIn(Exception):
    pass


def load_context() -> Context:
    """The current context; ``TETHER_SERVER``/``TETHER_TOKEN`` override the file."""
    data: dict[str, object] = {}
    path = config_path()
    if path.exists():
        data = json.loads(path.read_text())
    contexts = data.get("contexts") or {}
    current = contexts.get(data.get("current", "default"), {}) if isinstance(contexts, dict) else {}
    server = os.environ.get("TETHER_SERVER") or current.get("server")
    token = os.environ.get("TETHER_TOKEN") or current.get("token")
    if not server or not token:
        raise NotLoggedIn(
            f"no Tether context: run 'tether up', or 'tether login --server URL --token TOKEN' "
            f"(or set TETHER_SERVER and TETHER_TOKEN); looked in {path}"
        )
    return Context(server=str(server).rstrip("/"), token=str(token))


def save_context(server: str, token: str, name: str = "default") -> Path:
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data: dict[str, object] = json.loads(path.read_text()) if path.exists() else {}
    contexts = data.setdefault("contexts", {})
    assert isinstance(contexts, dict)
    contexts[name] = {"server": server.rstrip("/"), "token": token}
    data["current"] = name
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)
    return path
