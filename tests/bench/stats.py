"""Small statistics helpers for the benchmark."""

from __future__ import annotations

import math
from typing import Any


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))
    return ordered[k]


def summary(values: list[float]) -> dict[str, Any]:
    """count, p50, p95, p99, max (seconds in, seconds out)."""
    return {
        "count": len(values),
        "p50": pct(values, 0.50),
        "p95": pct(values, 0.95),
        "p99": pct(values, 0.99),
        "max": max(values) if values else math.nan,
    }


def parse_prometheus(text: str) -> list[tuple[str, dict[str, str], float]]:
    """(name, labels, value) of every sample in a Prometheus text exposition."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        name, labels = head, {}
        if "{" in head:
            name, _, rest = head.partition("{")
            for part in rest.rstrip("}").split('",'):
                if "=" in part:
                    k, _, v = part.partition("=")
                    labels[k.strip()] = v.strip().strip('"')
        try:
            out.append((name, labels, float(value)))
        except ValueError:
            continue
    return out


def histogram(samples: list[tuple[str, dict[str, str], float]], name: str) -> tuple[dict[float, float], float]:
    """Cumulative bucket counts (by upper bound, summed over series) and the total count of ``name``."""
    buckets: dict[float, float] = {}
    count = 0.0
    for n, labels, value in samples:
        if n == f"{name}_bucket":
            le = labels.get("le", "+Inf")
            bound = math.inf if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + value
        elif n == f"{name}_count":
            count += value
    return buckets, count


def bucket_quantile(buckets: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding the ``q`` quantile (from cumulative counts)."""
    total = buckets.get(math.inf, 0.0)
    if total <= 0:
        return math.nan
    for bound in sorted(buckets):
        if buckets[bound] >= q * total:
            return bound
    return math.inf


def diff_buckets(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {b: after[b] - before.get(b, 0.0) for b in after}


def hop_profile(commands: list[tuple[float, dict[str, float]]], sent: list[float] | None = None) -> dict[str, Any]:
    """Where a command's time goes: each hop's median over all commands, and its mean over the slowest 1 %
    (the commands at or above the round trip's p99) beside theirs; with ``sent`` (each command's send time,
    seconds into the window), when the slowest were sent (clustered or spread)."""
    if not commands:
        return {}
    p99 = pct([rt for rt, _ in commands], 0.99)
    slow = [(rt, h) for rt, h in commands if rt >= p99]
    names = list(commands[0][1])
    when = sorted(round(t, 2) for (rt, _), t in zip(commands, sent or [], strict=False) if rt >= p99)
    return {
        "commands": len(commands),
        "median": {n: pct([h[n] for _, h in commands], 0.5) for n in names},
        "slowest": {n: sum(h[n] for _, h in slow) / len(slow) for n in names},
        "slowest_count": len(slow),
        "slowest_round_trip": sum(rt for rt, _ in slow) / len(slow),
        "slowest_sent_at": when,
    }


def render_hops(profile: dict[str, Any]) -> list[str]:
    if not profile:
        return []
    lines = [
        f"hops ({profile['commands']} commands; median of all | mean of the {profile['slowest_count']} at or "
        f"above p99, round trip {profile['slowest_round_trip'] * 1e3:.1f} ms):"
    ]
    for name, median in profile["median"].items():
        lines.append(f"  {name}: {median * 1e3:.1f} ms | {profile['slowest'][name] * 1e3:.1f} ms")
    if profile.get("slowest_sent_at"):
        lines.append(f"  the slowest were sent at (s into the window): {profile['slowest_sent_at']}")
    return lines
