"""Parsing of sizes, durations, quotas and versions as people type them."""

from __future__ import annotations

import re

from schemas.errors import InvalidInput

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*(Ki|Mi|Gi|Ti|K|M|G|T|k)?B?$")
_FACTORS = {
    None: 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_FACTORS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_VERSION = re.compile(r"^v?1\.(\d{1,2})(?:\.(\d{1,3}))?$")


def parse_size(text: str) -> int:
    """``512Mi``, ``2Gi``, ``1G``, ``1048576`` -> bytes."""
    m = _SIZE.match(text.strip())
    if not m:
        raise InvalidInput(f"invalid size {text!r}: expected a number with an optional unit (Ki, Mi, Gi, Ti, K, M, G)")
    return int(float(m.group(1)) * _FACTORS[m.group(2)])


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``, ``1h30m`` -> seconds; ``0`` disables."""
    text = text.strip()
    if text in ("0", ""):
        return 0.0
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _DURATION_FACTORS[m.group(2)]
        pos = m.end()
    if pos != len(text) or total <= 0:
        raise InvalidInput(f"invalid duration {text!r}: expected e.g. 90s, 30m, 2h, 1d or 1h30m")
    return total


def parse_version(text: str) -> tuple[int, int | None]:
    """``1.36``, ``v1.36``, ``v1.36.2`` -> (minor, patch)."""
    m = _VERSION.match(text.strip())
    if not m:
        raise InvalidInput(f"invalid Kubernetes version {text!r}: expected v1.MINOR or v1.MINOR.PATCH, e.g. v1.36")
    return int(m.group(1)), int(m.group(2)) if m.group(2) is not None else None


def format_version(minor: int, patch: int | None) -> str:
    return f"v1.{minor}" + (f".{patch}" if patch is not None else "")


def parse_quota(text: str) -> dict[str, float | int]:
    """``tenants=3,spaces=10,cpu=8,memory=16Gi`` -> a dict for ``Quota``."""
    out: dict[str, float | int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not value:
            raise InvalidInput(f"invalid quota item {part!r}: expected key=value")
        try:
            if key in ("tenants", "spaces"):
                n = int(value)
                if n < 0:
                    raise ValueError
                out[key] = n
            elif key == "cpu":
                cpu = float(value)
                if cpu < 0:
                    raise ValueError
                out[key] = cpu
            elif key == "memory":
                out[key] = parse_size(value)
            else:
                raise InvalidInput(f"unknown quota {key!r}: expected tenants, spaces, cpu or memory")
        except ValueError:
            raise InvalidInput(f"invalid value {value!r} for quota {key!r}") from None
    return out
