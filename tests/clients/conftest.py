from __future__ import annotations

from pathlib import Path

import pytest

from tests.clients.tools import LINT_SCRIPT, NATSCLI_SCRIPT, from_script


@pytest.fixture(scope="session")
def nats_cli() -> Path:
    """The official ``nats`` CLI, pinned (built once per machine)."""
    return from_script(NATSCLI_SCRIPT)


@pytest.fixture(scope="session")
def lint_bin() -> Path:
    """``node_modules/.bin`` with the pinned ``redocly`` and ``asyncapi`` (installed once per lock file)."""
    return from_script(LINT_SCRIPT)
