"""Schemathesis hooks for tests/api (loaded by file path through ``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.check
def no_server_error(ctx: Any, response: Any, case: Any) -> None:
    """Like ``not_a_server_error``, with the response body in the failure."""
    if response.status_code < 500:
        return
    raise AssertionError(f"server error {response.status_code}: {response.text[:500]}")
