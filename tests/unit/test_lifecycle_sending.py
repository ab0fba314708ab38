"""The operation id the API picks for a call is kept only when it is one lifecycle could have made itself."""

from __future__ import annotations

import pytest

from services.lifecycle.sending import new_op_id, op_id_from


def test_a_well_formed_id_from_the_api_is_kept() -> None:
    given = new_op_id()
    assert op_id_from(given) == given


@pytest.mark.parametrize("given", ["", "x" * 32, "ABCDEF" + "0" * 26, "0" * 31, "0" * 33, "*", "0" * 31 + "\n"])
def test_anything_else_gets_a_new_id(given: str) -> None:
    got = op_id_from(given)
    assert got != given and len(got) == 32 and op_id_from(got) == got
