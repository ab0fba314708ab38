"""The CLI's contexts file: named contexts (server and token), one of them current, like kubectl's.

Where: ``$TETHER_CONFIG``, else ``$XDG_CONFIG_HOME/tether/config.json``, else ``~/.config/tether/config.json``
(0600, in a 0700 directory). Which context a command uses: ``--context NAME``, else ``$TETHER_CONTEXT``,
else the current one; ``$TETHER_SERVER`` and ``$TETHER_TOKEN`` override its server and token.

    {"current": "admin@127.0.0.1:8080",
     "contexts": {"admin@127.0.0.1:8080": {"server": "https://127.0.0.1:8080", "token": "tat_…", "user": "admin",
                                           "ca_file": "/home/me/.local/share/tether/tls/ca.pem"},
                  "tether": {"server": "…", "token": "…", "user": "admin", "data_dir": "/home/me/.local/share/tether",
                             "ca_file": "/home/me/.local/share/tether/tls/ca.pem"}}}

``ca_file``: the CA the server's HTTPS certificate is verified with (``tether up`` makes one in its data dir);
without it, the system's trusted CAs. ``$TETHER_CA_FILE`` overrides it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$")


def config_path() -> Path:
    if env := os.environ.get("TETHER_CONFIG"):
        return Path(env)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "tether" / "config.json"


@dataclass(frozen=True)
class Context:
    server: str
    token: str
    name: str = ""
    ca_file: str = ""
    """The CA of a server whose certificate a private CA signed ("" : the system's CAs)."""


class NotLoggedIn(Exception):
    pass


class ConfigError(Exception):
    pass


def check_context_name(name: str) -> str:
    if not CONTEXT_NAME.match(name):
        raise ConfigError(f"invalid context name {name!r}: 1-128 letters, digits, '_', '.', '@', ':' or '-'")
    return name


def read_config(path: Path | None = None) -> dict[str, Any]:
    path = path or config_path()
    if not path.exists():
        return {"contexts": {}}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("contexts", {}), dict):
        raise ConfigError(f"{path} is not a Tether config (expected an object with 'contexts')")
    data.setdefault("contexts", {})
    return data


def write_config(data: dict[str, Any], path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def selected_name(explicit: str | None = None) -> str:
    """The context a command uses by name ("" when none is chosen or current)."""
    if explicit:
        return explicit
    if env := os.environ.get("TETHER_CONTEXT"):
        return env
    current = read_config().get("current") or ""
    return str(current)


def load_context(name: str | None = None) -> Context:
    """The context to use; ``TETHER_SERVER``/``TETHER_TOKEN`` override its fields."""
    path = config_path()
    try:
        contexts = read_config(path)["contexts"]
        chosen = selected_name(name)
    except ConfigError as exc:
        raise NotLoggedIn(str(exc)) from None
    entry: dict[str, Any] = {}
    if chosen:
        if chosen not in contexts and not (os.environ.get("TETHER_SERVER") and os.environ.get("TETHER_TOKEN")):
            known = ", ".join(sorted(contexts)) or "none"
            raise NotLoggedIn(f"no context {chosen!r} in {path} (known: {known}); see 'tether config get-contexts'")
        entry = contexts.get(chosen) or {}
    server = os.environ.get("TETHER_SERVER") or entry.get("server")
    token = os.environ.get("TETHER_TOKEN") or entry.get("token")
    if not server or not token:
        raise NotLoggedIn(
            f"no Tether context: run 'tether up', or 'tether login --server URL --token TOKEN' "
            f"(or set TETHER_SERVER and TETHER_TOKEN); looked in {path}"
        )
    ca_file = os.environ.get("TETHER_CA_FILE") or entry.get("ca_file") or ""
    return Context(server=str(server).rstrip("/"), token=str(token), name=chosen, ca_file=str(ca_file))


def default_login_name(server: str, user: str) -> str:
    """``<user>@<host:port>``: two users of one platform, or one user of two, never share a context."""
    netloc = urlsplit(server).netloc or server
    return check_context_name(f"{user}@{netloc}".replace("/", "_")[:128])


def known_ca_file(server: str) -> str:
    """The CA another context already verifies ``server`` with ("" when none does): logging in as someone else
    on a platform this machine runs (``tether up``) needs no ``--ca-file``."""
    try:
        contexts = read_config()["contexts"]
    except ConfigError:
        return ""
    for _name, entry in sorted(contexts.items()):
        if isinstance(entry, dict) and entry.get("server") == server.rstrip("/") and entry.get("ca_file"):
            return str(entry["ca_file"])
    return ""


def save_context(
    server: str, token: str, name: str, *, user: str = "", make_current: bool = True, ca_file: str = ""
) -> Path:
    """Write (or replace) one named context; the others are kept."""
    check_context_name(name)
    data = read_config()
    entry = {"server": server.rstrip("/"), "token": token, "user": user}
    if ca_file:
        entry["ca_file"] = ca_file
    data["contexts"][name] = entry
    if make_current:
        data["current"] = name
    return write_config(data)


def up_context_name(data_dir: Path) -> str:
    """A context for ``tether up`` named after its data dir (``~/.local/share/tether`` -> ``tether``)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", data_dir.resolve().name).strip("-.") or "tether"
    return check_context_name(base[:100])


def save_up_context(server: str, token: str, data_dir: Path, ca_file: str = "") -> tuple[str, Path, bool]:
    """Write the context of the platform in ``data_dir``: its own one (even renamed), never another's.

    It becomes current when it is new or when no valid context is current. Returns (name, path, current).
    """
    data = read_config()
    contexts: dict[str, Any] = data["contexts"]
    where = str(data_dir.resolve())
    name = next((n for n, c in contexts.items() if isinstance(c, dict) and c.get("data_dir") == where), "")
    created = not name
    if created:
        base = up_context_name(data_dir)
        name, n = base, 2
        while name in contexts:
            name, n = f"{base}-{n}", n + 1
    contexts[name] = {"server": server.rstrip("/"), "token": token, "user": "admin", "data_dir": where}
    if ca_file:
        contexts[name]["ca_file"] = ca_file
    current = data.get("current")
    make_current = created or current not in contexts
    if make_current:
        data["current"] = name
    return name, write_config(data), make_current
