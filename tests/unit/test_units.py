from __future__ import annotations

import pytest

from schemas.errors import InvalidInput
from schemas.units import parse_duration, parse_quota, parse_size, parse_version


@pytest.mark.parametrize(("text", "n"), [("1Gi", 1 << 30), ("512Mi", 512 << 20), ("1G", 10**9), ("100", 100)])
def test_sizes(text: str, n: int) -> None:
    assert parse_size(text) == n


@pytest.mark.parametrize(
    ("text", "s"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400), ("0", 0)]
)
def test_durations(text: str, s: float) -> None:
    assert parse_duration(text) == s


@pytest.mark.parametrize("bad", ["10x", "m", "-5m", "5 m"])
def test_bad_durations(bad: str) -> None:
    with pytest.raises(InvalidInput, match="invalid duration"):
        parse_duration(bad)


def test_quota() -> None:
    assert parse_quota("tenants=3,spaces=10,cpu=8,memory=16Gi") == {
        "tenants": 3,
        "spaces": 10,
        "cpu": 8.0,
        "memory": 16 << 30,
    }
    for bad, msg in [
        ("tenants=-1", "invalid value"),
        ("gpus=1", "unknown quota 'gpus'"),
        ("cpu", "key=value"),
        ("memory=lots", "invalid size"),
    ]:
        with pytest.raises(InvalidInput, match=msg):
            parse_quota(bad)


def test_versions() -> None:
    assert parse_version("v1.36.2") == (36, 2)
    assert parse_version("1.35") == (35, None)
    with pytest.raises(InvalidInput, match="invalid Kubernetes version"):
        parse_version("latest")
