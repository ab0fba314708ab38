"""The agent's long-lived identity: ``<state_dir>/credentials.json``.

Written once, when a one-time connect token is traded for a credential, and
read on every start after that. The file is ``0600`` in a ``0700`` directory
and replaced atomically, so a crash never leaves a torn credential behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import PermanentError
from agent.statefiles import CREDENTIALS_FILE, read_json, write_json_atomic
from schemas.errors import InvalidInput
from schemas.names import check_name

FILE_NAME = CREDENTIALS_FILE


@dataclass(frozen=True)
class Credentials:
    """What the platform gave this agent when it first connected."""

    cluster: str
    """The cluster's name on the platform."""

    credential: str
    """The agent's secret (``tac.<cluster>.<secret>``), shown by the platform only once."""

    server: str = ""
    """The NATS URL(s) the agent connected to when it got the credential."""

    def __repr__(self) -> str:
        # Never print the secret in logs or tracebacks.
        return f"Credentials(cluster={self.cluster!r}, credential='***', server={self.server!r})"


def path_in(state_dir: Path) -> Path:
    return state_dir / FILE_NAME


def load(state_dir: Path) -> Credentials | None:
    """The stored credentials, or None when this agent never connected.

    A file that exists but cannot be used raises PermanentError naming the file
    and the problem: guessing would risk connecting as the wrong cluster.
    """
    path = path_in(state_dir)
    try:
        data = read_json(path)
    except (ValueError, OSError) as exc:
        raise PermanentError(f"cannot read agent credentials: {exc}") from None
    if data is None:
        return None
    cluster, credential, server = data.get("cluster"), data.get("credential"), data.get("server", "")
    if not isinstance(cluster, str) or not isinstance(credential, str) or not credential:
        raise PermanentError(
            f"{path} is damaged: expected string fields 'cluster' and 'credential'; "
            "remove it and connect the cluster again with a new connect token"
        )
    try:
        check_name(cluster, "cluster name")
    except InvalidInput as exc:
        raise PermanentError(f"{path} is damaged: {exc.description}") from None
    return Credentials(cluster=cluster, credential=credential, server=server if isinstance(server, str) else "")


def save(state_dir: Path, credentials: Credentials) -> Path:
    """Store ``credentials`` atomically with mode 0600; return the file's path."""
    path = path_in(state_dir)
    write_json_atomic(
        path,
        {"cluster": credentials.cluster, "credential": credentials.credential, "server": credentials.server},
    )
    return path
