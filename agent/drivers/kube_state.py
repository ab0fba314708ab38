"""The agent's state Secret: its identity files (``agent.identity.STATE_FILES``) kept in the cluster.

In a cluster the agent can keep its state directory's identity files in a Secret
(``$TETHER_AGENT_STATE_SECRET=<namespace>/<name>``): restored into the state directory when the driver
starts (a file already there wins), written back when they change (see ``agent/deploy/README.md``), so a
pod rescheduled onto an empty ``emptyDir`` comes back as the same agent.
"""

from __future__ import annotations

import base64
import logging
import threading
from pathlib import Path

from agent.drivers.kube_api import KubeApi
from agent.errors import DriverError
from agent.identity.files import STATE_FILES
from agent.statefiles import write_bytes_atomic

logger = logging.getLogger(__name__)

STATE_SECRET_ENV = "TETHER_AGENT_STATE_SECRET"


def parse_secret_ref(text: str) -> tuple[str, str] | None:
    """``<namespace>/<name>``; None when empty; DriverError when malformed."""
    text = text.strip()
    if not text:
        return None
    namespace, sep, name = text.partition("/")
    if not sep or not namespace or not name:
        raise DriverError(f"${STATE_SECRET_ENV} must be <namespace>/<name>, not {text!r}")
    return namespace, name


class StateSecret:
    """The Secret ``namespace/name`` mirroring the identity files of ``state_dir``."""

    def __init__(self, api: KubeApi, namespace: str, name: str, state_dir: Path) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.state_dir = state_dir
        self._mirrored: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._failing = False

    def restore(self) -> None:
        """Copy the Secret's files into the state directory when they are missing there."""
        namespace, name = self.namespace, self.name
        try:
            secret = self.api.get("Secret", name, namespace)
        except DriverError as exc:
            raise DriverError(f"cannot read the agent's state Secret {namespace}/{name}: {exc}") from None
        data = (secret or {}).get("data") or {}
        for file in STATE_FILES:
            if file not in data:
                continue
            raw = base64.b64decode(data[file])
            self._mirrored[file] = raw
            path = self.state_dir / file
            if path.exists():
                continue
            try:
                write_bytes_atomic(path, raw)  # byte for byte: the creds file is not JSON
                self._mirrored[file] = path.read_bytes()
            except OSError as exc:
                raise DriverError(f"cannot restore {file} from the Secret {namespace}/{name}: {exc}") from None
            logger.info("restored %s from the Secret %s/%s", file, namespace, name)

    def _changed(self) -> dict[str, str]:
        """The files that differ from what the Secret holds, base64-encoded."""
        changed: dict[str, str] = {}
        for file in STATE_FILES:
            path = self.state_dir / file
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning("cannot read %s to keep it in the state Secret: %s", path, exc)
                continue
            if self._mirrored.get(file) != raw:
                changed[file] = base64.b64encode(raw).decode()
        return changed

    def mirror(self) -> None:
        """Write changed files into the Secret (a merge patch; best effort, tried again on the next call)."""
        namespace, name = self.namespace, self.name
        with self._lock:
            changed = self._changed()
            if not changed:
                return
            try:
                self.api.patch_merge("Secret", name, {"data": changed}, namespace)
            except DriverError as exc:
                level = logging.DEBUG if self._failing else logging.WARNING
                logger.log(level, "cannot save the agent's state in the Secret %s/%s: %s", namespace, name, exc)
                self._failing = True
                return
            self._failing = False
            for file, encoded in changed.items():
                self._mirrored[file] = base64.b64decode(encoded)
                logger.info("saved %s in the Secret %s/%s", file, namespace, name)
