"""The real client tools the ``clients`` tests drive: the official ``nats`` CLI and the API linters.

Both come from project scripts that build or install them once per machine into ``~/.cache/tether``
(``tests/tools/natscli/build.sh``, ``tests/tools/lint/install.sh``; ``.ci/run`` calls both first). Without
Go, or node and npm (exit 3), the tests are skipped locally and fail in CI (``CI=true``): there they must run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parents[2]
NATSCLI_SCRIPT = ROOT / "tests" / "tools" / "natscli" / "build.sh"
LINT_SCRIPT = ROOT / "tests" / "tools" / "lint" / "install.sh"
MISSING_TOOLCHAIN = 3


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    if in_ci():
        pytest.fail(f"{reason}; in CI (CI=true) the clients tests must run, not skip")
    pytest.skip(reason)


def from_script(script: Path, timeout: float = 1800) -> Path:
    """The path a build/install script prints last; skip (fail in CI) when its toolchain is missing."""
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=timeout)
    if proc.returncode == MISSING_TOOLCHAIN:
        unavailable(f"{script.name}: {proc.stderr.strip()}")
    if proc.returncode != 0:
        raise RuntimeError(f"{script} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path([line for line in proc.stdout.splitlines() if line.strip()][-1].strip())


def run(
    argv: Sequence[str | Path], *, timeout: float = 30, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a tool; on failure the assertion shows its whole output."""
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env)
    if check:
        assert proc.returncode == 0, f"{argv} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc
