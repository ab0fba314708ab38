"""Small files in the agent's state directory: created private, replaced atomically.

The state directory holds the agent's credential, so it is created ``0700`` and
every file in it ``0600``. A file is never rewritten in place: the new content
goes to a temporary file in the same directory, is fsynced, and renamed over
the old one, so a crash (even ``kill -9``) leaves either the old or the new
file, never half of one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from agent.errors import PermanentError

logger = logging.getLogger(__name__)

DIR_MODE = 0o700
FILE_MODE = 0o600
LOCK_FILE = "agent.lock"


def ensure_dir(directory: Path) -> Path:
    """Create ``directory`` (and parents) if missing; a directory we create is ``0700``."""
    if not directory.is_dir():
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        # mkdir's mode is filtered by the umask; make sure it is exactly 0700.
        os.chmod(directory, DIR_MODE)
    return directory


def write_json_atomic(path: Path, data: dict[str, Any], mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically and durably, with permissions ``mode``."""
    write_bytes_atomic(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode(), mode)


def write_bytes_atomic(path: Path, payload: bytes, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``payload``, atomically and durably, with permissions ``mode``."""
    ensure_dir(path.parent)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str, mode: int = FILE_MODE) -> None:
    """Replace ``path`` with ``text`` atomically (temp file, fsync, rename), mode 0600."""
    ensure_dir(path.parent)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (best effort where directories cannot be opened)."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when the file does not exist.

    Raises ValueError saying what is wrong when the file is not a JSON object.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, not {type(data).__name__}")
    return data


class StateLock:
    """An exclusive lock on a state directory: one agent per directory at a time.

    Two agents sharing one credential would heartbeat the same cluster with two
    sessions and fight over it; the second one is refused with a clear message.
    The lock is an ``flock`` and so dies with the process, even on ``kill -9``.
    """

    def __init__(self, directory: Path) -> None:
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        ensure_dir(self.path.parent)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            who = f" (pid {holder})" if holder.isdigit() else ""
            raise PermanentError(
                f"another agent{who} is already running with state directory {self.path.parent}"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None
