"""The account's public key is derived from its seed once, not at every JWT the registry signs (issue 17: 75 us
of every agent's bootstrap in the registry while 10,000 connect)."""

from __future__ import annotations

import pytest

from services.bus import identity
from services.bus.identity import Trust


def test_the_account_public_key_is_derived_once(monkeypatch: pytest.MonkeyPatch) -> None:
    trust = Trust.create()
    want = identity.public_key(trust.account)
    derived: list[str] = []
    real = identity.public_key

    def counted(seed: str) -> str:
        derived.append(seed)
        return real(seed)

    monkeypatch.setattr(identity, "public_key", counted)
    assert [trust.account_pub for _ in range(3)] == [want] * 3
    assert derived == [trust.account]
    # Another platform's trust has its own.
    other = Trust.create()
    assert other.account_pub != want
