"""Every file that makes an agent the same agent after a restart, and their one store.

``STATE_FILES`` is the one list: the file store below reads and writes them in
the state directory, and the kube driver's Secret store
(``agent.drivers.kube_state``) keeps exactly these in the agent's state Secret,
so a pod rescheduled onto an empty ``emptyDir`` (its connect token long spent)
comes back as the same agent. A new identity file is added here, nowhere else.

Every file is ``0600`` in a ``0700`` directory and replaced atomically
(``agent.statefiles``), so a crash never leaves a torn credential behind.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from agent.errors import PermanentError
from agent.statefiles import read_json, write_json_atomic, write_text_atomic
from schemas.credentials import creds as creds_text
from schemas.credentials import public_key, read_creds
from schemas.errors import InvalidInput
from schemas.names import check_name

CREDENTIALS_FILE = "credentials.json"
"""The agent's long-lived platform credential, its cluster and its server."""
NATS_CREDS_FILE = "nats.creds"
"""The agent's own NATS user: its JWT and its nkey seed (the seed never leaves the state directory but into
the agent's own state Secret)."""
STATE_FILES: tuple[str, ...] = (CREDENTIALS_FILE, NATS_CREDS_FILE)
"""Every identity file, in the order they are restored."""
PENDING_SEED_FILE = "nats.seed"
"""The NATS key of a bootstrap not answered yet: an agent restarted before the answer asks again with the same
key, which the registry answers again until the token expires. Removed once answered, so not in
``STATE_FILES`` (a rescheduled pod has its credentials, or a token to trade with a new key)."""
_USER_SEED = re.compile(r"^SU[A-Z2-7]{56}$")


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


class IdentityFiles:
    """The identity files of one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    @property
    def credentials_path(self) -> Path:
        return self.state_dir / CREDENTIALS_FILE

    @property
    def nats_creds_path(self) -> Path:
        return self.state_dir / NATS_CREDS_FILE

    def load(self) -> Credentials | None:
        """The stored credentials, or None when this agent never connected.

        A file that exists but cannot be used raises PermanentError naming the file
        and the problem: guessing would risk connecting as the wrong cluster.
        """
        path = self.credentials_path
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

    def save(self, credentials: Credentials) -> Path:
        """Store ``credentials`` atomically with mode 0600; return the file's path."""
        path = self.credentials_path
        write_json_atomic(
            path,
            {"cluster": credentials.cluster, "credential": credentials.credential, "server": credentials.server},
        )
        return path

    @property
    def has_nats_user(self) -> bool:
        """Whether the platform gave this agent its own NATS user (operator mode)."""
        return self.nats_creds_path.exists()

    def nats_user(self) -> tuple[str, str] | None:
        """The stored NATS user's (JWT, seed); None on an open NATS (no file)."""
        try:
            text = self.nats_creds_path.read_text()
        except OSError:
            return None
        return read_creds(text)

    def save_nats_user(self, jwt: str, seed: str) -> None:
        write_text_atomic(self.nats_creds_path, creds_text(jwt, seed))

    @property
    def pending_seed_path(self) -> Path:
        return self.state_dir / PENDING_SEED_FILE

    def pending_seed(self) -> str | None:
        """The key of an unanswered bootstrap, or None (none, or not a user seed: a new key is made)."""
        try:
            seed = self.pending_seed_path.read_text().strip()
        except (OSError, ValueError):
            return None
        if not _USER_SEED.match(seed):
            return None
        try:
            public_key(seed)
        except Exception:  # nkeys' own errors: a damaged file, a new key is made instead
            return None
        return seed

    def keep_pending_seed(self, seed: str) -> None:
        write_text_atomic(self.pending_seed_path, seed + "\n")

    def drop_pending_seed(self) -> None:
        self.pending_seed_path.unlink(missing_ok=True)


def load(state_dir: Path) -> Credentials | None:
    """The credentials stored in ``state_dir`` (``IdentityFiles.load``)."""
    return IdentityFiles(state_dir).load()


def save(state_dir: Path, credentials: Credentials) -> Path:
    """Store ``credentials`` in ``state_dir`` (``IdentityFiles.save``)."""
    return IdentityFiles(state_dir).save(credentials)


def path_in(state_dir: Path) -> Path:
    return IdentityFiles(state_dir).credentials_path
