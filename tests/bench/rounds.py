"""Phase 3's interleaved rounds: the platform, the same writes done raw and one raw write, measured in turn.

One 10-second window of each holds a thousand commands at most, so its p99 is its tenth slowest command: one
stall of the machine (nats-server's garbage collection, a burst of the fleet's periodic work) sets it, and
the hour moves raw JetStream's maximum by 2-3x between runs of the same code. A platform window and a
baseline window measured minutes apart therefore compare two hours, not two designs.

Here each round measures every side back to back, the order rotated from round to round so no side always
follows another's wake, and the figures compared are each round's own ratios (sides that shared the
machine's state within a minute) and the ratio of the pooled round trips. The median of the rounds' ratios
and their range say whether a gap is the design's or the hour's.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.bench.stats import pct

PLATFORM = "platform"
RAW = "raw JetStream (1 write)"
"""The side every side's tail is a multiple of (the target's yardstick)."""


@dataclass(frozen=True)
class Side:
    """One thing measured in every round."""

    name: str
    """How the printout names it (``"platform"`` is the one the others are compared with)."""
    fixed: Callable[[float, float], Awaitable[list[float]]]
    """Commands offered at a rate (per second) for a time (seconds): the round trips (seconds)."""
    top: Callable[[float], Awaitable[tuple[float, float]]]
    """A closed loop for a time (seconds): commands per second, and nats-server's CPU ms per command in it."""
    own_half: bool = False
    """Also measured at half its own maximum in each round, beside raw JetStream at that rate: the tail target
    (p99 at half one's own maximum <= 3x raw's at that rate) applied to a baseline, not only to the platform."""


@dataclass
class Round:
    """What one round measured, per side."""

    p99: dict[str, float] = field(default_factory=dict)
    per_s: dict[str, float] = field(default_factory=dict)
    nats_ms: dict[str, float] = field(default_factory=dict)
    """nats-server's CPU ms per command at each side's maximum."""
    round_trips: dict[str, list[float]] = field(default_factory=dict)
    own_half: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    """Per ``Side.own_half`` side: the rate (half its maximum in this round), its p99 there and raw's."""
    own_half_trips: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict)
    """Per ``Side.own_half`` side: its round trips at that rate, and raw's (pooled over the rounds)."""


def order(names: list[str], i: int) -> list[str]:
    """Round ``i``'s order: the sides rotated by ``i``, so each leads (and follows each other) in turn."""
    k = i % len(names) if names else 0
    return names[k:] + names[:k]


async def measure(
    sides: list[Side],
    rounds: int,
    rate: float,
    seconds: float,
    between: Callable[[], Awaitable[object]],
    log: Callable[[str], None],
) -> list[Round]:
    """``rounds`` rounds: each side's maximum, then each side's fixed rate, every side in the round's order;
    ``between`` is awaited before each window (it waits for the machine to settle)."""
    by_name = {s.name: s for s in sides}
    out: list[Round] = []
    for i in range(rounds):
        r = Round()
        names = order(list(by_name), i)
        for name in names:
            await between()
            r.per_s[name], r.nats_ms[name] = await by_name[name].top(seconds)
        for name in names:
            await between()
            lat = await by_name[name].fixed(rate, seconds)
            r.round_trips[name] = lat
            r.p99[name] = pct(lat, 0.99)
        await _own_halves(by_name, names, r, seconds, between, log)
        log(
            f"(3) round {i + 1}/{rounds} ({' → '.join(names)}): "
            + "; ".join(
                f"{n} {r.per_s[n]:.0f}/s (nats {r.nats_ms[n]:.2f} ms each), p99 {r.p99[n] * 1e3:.1f} ms" for n in names
            )
        )
        out.append(r)
    return out


async def _own_halves(
    by_name: dict[str, Side],
    names: list[str],
    r: Round,
    seconds: float,
    between: Callable[[], Awaitable[object]],
    log: Callable[[str], None],
) -> None:
    """Each ``own_half`` side at half its maximum of this round, then raw JetStream at that rate; the sides in
    the round's order, so none is always the first after the fixed-rate windows."""
    raw = by_name.get(RAW)
    for name in names:
        side = by_name[name]
        if not side.own_half or raw is None or not r.per_s.get(name):
            continue
        rate = max(1.0, round(r.per_s[name] / 2))
        await between()
        mine_trips = await side.fixed(rate, seconds)
        await between()
        theirs_trips = await raw.fixed(rate, seconds)
        mine, theirs = pct(mine_trips, 0.99), pct(theirs_trips, 0.99)
        r.own_half[name] = (rate, mine, theirs)
        r.own_half_trips[name] = (mine_trips, theirs_trips)
        log(f"(3)   {name} at half its own max ({rate:g}/s): p99 {mine * 1e3:.1f} ms, raw {theirs * 1e3:.1f} ms")


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def _spread(values: list[float]) -> dict[str, float]:
    ok = [v for v in values if not math.isnan(v)]
    if not ok:
        return {"median": math.nan, "min": math.nan, "max": math.nan}
    return {"median": statistics.median(ok), "min": min(ok), "max": max(ok)}


def summarize(rounds: list[Round], rate: float) -> dict[str, Any]:
    """Per side: the median maximum and the pooled p99; per baseline: the platform's share of its maximum
    and its multiple of the platform's p99, in each round (median, min, max) and pooled."""
    if not rounds:
        return {}
    names = list(rounds[0].per_s)
    pooled = {n: [x for r in rounds for x in r.round_trips.get(n, [])] for n in names}
    out: dict[str, Any] = {
        "rounds": len(rounds),
        "rate": rate,
        "sides": {
            n: {
                "per_s": _spread([r.per_s[n] for r in rounds]),
                "nats_ms_per_command": _spread([r.nats_ms.get(n, math.nan) for r in rounds]),
                "p99": _spread([r.p99[n] for r in rounds]),
                "pooled_p99": pct(pooled[n], 0.99),
                "pooled_p50": pct(pooled[n], 0.50),
                "commands": len(pooled[n]),
            }
            for n in names
        },
        "against": {},
    }
    halves = {n for r in rounds for n in r.own_half}
    out["own_half"] = {n: _own_half(rounds, n) for n in sorted(halves)}
    if PLATFORM not in names:
        return out
    for n in names:
        if n == PLATFORM:
            continue
        out["against"][n] = {
            "share_of_max": _spread([_ratio(r.per_s[PLATFORM], r.per_s[n]) for r in rounds]),
            "p99_multiple": _spread([_ratio(r.p99[PLATFORM], r.p99[n]) for r in rounds]),
            "pooled_p99_multiple": _ratio(out["sides"][PLATFORM]["pooled_p99"], out["sides"][n]["pooled_p99"]),
        }
    return out


def _platform_at_equal_load(r: Round) -> tuple[float, list[float]]:
    """The platform's p99 and round trips to set beside a baseline at half the baseline's own maximum: at half
    the platform's own maximum of the same round when it was measured there, else its window at the fixed rate
    (half the throughput phase's maximum: in a round where the platform is slower than in that phase, that
    window runs above half, and the comparison is no longer at equal load)."""
    if PLATFORM in r.own_half:
        return r.own_half[PLATFORM][1], r.own_half_trips[PLATFORM][0]
    return r.p99.get(PLATFORM, math.nan), r.round_trips.get(PLATFORM, [])


def _own_half(rounds: list[Round], n: str) -> dict[str, Any]:
    """Side ``n`` at half its own maximum: per round (median, min, max) and pooled over the rounds, whose single
    rounds moved by 10x either way at 10,000 agents."""
    measured = [r for r in rounds if n in r.own_half]
    mine = [x for r in measured for x in r.own_half_trips[n][0]]
    theirs = [x for r in measured for x in r.own_half_trips[n][1]]
    pooled = pct(mine, 0.99) if mine else math.nan
    out: dict[str, Any] = {
        "rate": _spread([r.own_half[n][0] for r in measured]),
        "p99": _spread([r.own_half[n][1] for r in measured]),
        "raw_p99": _spread([r.own_half[n][2] for r in measured]),
        "multiple_of_raw": _spread([_ratio(r.own_half[n][1], r.own_half[n][2]) for r in measured]),
        "pooled_p99": pooled,
        "pooled_multiple_of_raw": _ratio(pooled, pct(theirs, 0.99) if theirs else math.nan),
    }
    if n == PLATFORM:
        return out
    # Each side at half its own maximum (an equally loaded machine): the platform's p99 over this side's.
    platform = [_platform_at_equal_load(r) for r in measured]
    platform_trips = [x for _, trips in platform for x in trips]
    out["platform_multiple"] = _spread(
        [_ratio(p99, r.own_half[n][1]) for (p99, _), r in zip(platform, measured, strict=True)]
    )
    out["pooled_platform_multiple"] = _ratio(pct(platform_trips, 0.99) if platform_trips else math.nan, pooled)
    out["platform_at_own_half"] = all(PLATFORM in r.own_half for r in measured)
    return out


def render(s: dict[str, Any]) -> list[str]:
    """The summary as printout lines."""
    if not s:
        return []
    lines = [f"interleaved rounds: {s['rounds']}, fixed rate {s['rate']:g}/s"]
    for n, v in s["sides"].items():
        lines.append(
            f"  {n}: max {v['per_s']['median']:.0f}/s (rounds {v['per_s']['min']:.0f}-{v['per_s']['max']:.0f}), "
            f"nats-server {v['nats_ms_per_command']['median']:.2f} ms a command; "
            f"p99 pooled {v['pooled_p99'] * 1e3:.1f} ms, rounds' median {v['p99']['median'] * 1e3:.1f} ms "
            f"({v['p99']['min'] * 1e3:.1f}-{v['p99']['max'] * 1e3:.1f}); p50 {v['pooled_p50'] * 1e3:.1f} ms"
        )
    for n, h in s.get("own_half", {}).items():
        m = h["multiple_of_raw"]
        lines.append(
            f"  {n} at half its own max ({h['rate']['median']:.0f}/s): p99 rounds' median "
            f"{h['p99']['median'] * 1e3:.1f} ms, raw at that rate {h['raw_p99']['median'] * 1e3:.1f} ms: "
            f"{m['median']:.2f}x raw ({m['min']:.2f}-{m['max']:.2f}x), pooled {h['pooled_multiple_of_raw']:.2f}x, "
            "the tail target applied to it"
        )
        if "platform_multiple" not in h:
            continue
        e = h["platform_multiple"]
        at = "its own max of each round" if h["platform_at_own_half"] else "its max"
        lines.append(
            f"  platform at half {at} against {n} at half its own: p99 {e['median']:.2f}x "
            f"({e['min']:.2f}-{e['max']:.2f}x), pooled {h['pooled_platform_multiple']:.2f}x"
        )
    for n, a in s["against"].items():
        share, mult = a["share_of_max"], a["p99_multiple"]
        lines.append(
            f"  platform against {n}: max {share['median']:.1%} ({share['min']:.1%}-{share['max']:.1%}); "
            f"p99 {mult['median']:.2f}x ({mult['min']:.2f}-{mult['max']:.2f}x), pooled {a['pooled_p99_multiple']:.2f}x"
        )
    return lines
