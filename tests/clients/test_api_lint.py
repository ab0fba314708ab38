"""Finding 4 of issue 15: the API documents, checked by the linters people point at them.

- OpenAPI (``/openapi.json``): ``redocly lint`` with tests/tools/lint/redocly.yaml, zero errors and zero
  warnings (it had no ``servers``, ``/healthz`` without declared security, undeclared tags, no contact or
  licence).
- AsyncAPI (``schemas/asyncapi.yaml``): ``asyncapi validate``, zero errors and zero warnings.

Both linters are pinned by tests/tools/lint/package-lock.json and installed once per machine. Their telemetry
is off: nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from services.api.app import create_app
from services.api.auth import Platform
from tests.clients.tools import ROOT, run

pytestmark = pytest.mark.clients

LINT_DIR = ROOT / "tests" / "tools" / "lint"


def quiet_env(tmp_path: Path) -> dict[str, str]:
    analytics = tmp_path / "asyncapi-analytics.json"
    analytics.write_text(json.dumps({"analyticsEnabled": "false", "infoMessageShown": "true", "userID": "test"}))
    return {
        **os.environ,
        "HOME": str(tmp_path),
        "ASYNCAPI_METRICS_CONFIG_PATH": str(analytics),
        "REDOCLY_TELEMETRY": "off",
        "REDOCLY_SUPPRESS_UPDATE_NOTICE": "true",
        "NO_COLOR": "1",
    }


def test_openapi_document_passes_redocly(lint_bin: Path, tmp_path: Path) -> None:
    document = create_app(Platform(bus=None, nats_url="nats://127.0.0.1:4222")).openapi()  # type: ignore[arg-type]
    path = tmp_path / "openapi.json"
    path.write_text(json.dumps(document))
    argv = [lint_bin / "redocly", "lint", "--config", LINT_DIR / "redocly.yaml", "--format", "summary", path]
    result = run(argv, check=False, timeout=60, env=quiet_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    problems = [line for line in output.splitlines() if re.match(r"^\s*(error|warning)\s", line)]
    assert not problems, output


def test_asyncapi_document_passes_asyncapi_validate(lint_bin: Path, tmp_path: Path) -> None:
    argv = [lint_bin / "asyncapi", "validate", ROOT / "schemas" / "asyncapi.yaml", "--fail-severity", "warn"]
    result = run(argv, check=False, timeout=60, env=quiet_env(tmp_path))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert re.search(r"\(0 errors, 0 warnings", output), output
