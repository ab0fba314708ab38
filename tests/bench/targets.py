"""The benchmark's targets, judged from its results (printed as met, not met or not measured; never asserted).

Issue 17's targets are ratios within one run, each beside the raw baseline of the same run: absolute rates moved
up to 2x between hours and machines of the same size, the ratios did not. A target whose phase did not run, or
that needs another fleet size, is "not measured" rather than "not met". Where issue 17 asks for the gap to be
shown as nats-server's own, the figure says what the raw baseline doing the same durable writes reached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

KB = 1024
FLEET = 10_000
"""The fleet size the connect, restart and scale targets are set for."""


@dataclass(frozen=True)
class Target:
    target: str
    """What is promised, as the issue words it."""
    met: bool | None
    """None: not measured in this run (its phase not run, or another fleet size needed)."""
    measured: str
    """The run's figure, and beside it what the raw baseline of the same run reached where that decides."""
    note: str = ""
    """What to run to measure it, when this run could not."""

    def line(self) -> str:
        mark = {True: "met", False: "NOT met", None: "n/a"}[self.met]
        note = f" ({self.note})" if self.note else ""
        return f"  [{mark:>7}] {self.target}: {self.measured}{note}"


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _num(x: Any) -> float | None:
    """A finite number, or None (absent, NaN or not a number)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
        return None
    return float(x)


def _times(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f}x"


def scale(r: dict[str, Any]) -> Target:
    n = r.get("agents", 0)
    name = "10,000 agents online on one machine"
    if "connect" not in r:
        return Target(name, None, "the connect did not run")
    if n < FLEET:
        return Target(name, None, f"{n} agents connected and online", "run with --agents 10000")
    return Target(name, True, f"{n} agents connected and online")


def throughput(r: dict[str, Any]) -> Target:
    name = "max commands/s through the API ≥ 25 % of raw JetStream's with the same durability"
    share = _num(_get(r, "commands", "rounds", "against", "raw JetStream (1 write)", "share_of_max", "median"))
    how = "rounds' median"
    if share is None:
        ours, raw = _num(_get(r, "commands", "max", "per_s")), _num(_get(r, "commands", "baseline_max", "per_s"))
        share, how = (ours / raw if ours is not None and raw else None), "one window each"
    if share is None:
        return Target(name, None, "phase 3 did not run")
    return Target(name, share >= 0.25, f"{share:.1%} of raw ({how})")


def tail(r: dict[str, Any]) -> Target:
    """The p99 at half the platform's own maximum against raw JetStream's at that rate, round by round; beside
    it the same writes held to the same test (the raw baseline doing the platform's durable writes)."""
    name = "round-trip p99 at half the platform's maximum ≤ 3x raw JetStream's p99 at that rate"
    half = _get(r, "commands", "rounds", "own_half")
    ours = _num(_get(half, "platform", "multiple_of_raw", "median"))
    if ours is None:
        return Target(name, None, "needs phase 3 with --rounds and --same-writes")
    same = _num(_get(half, "same writes (4)", "multiple_of_raw", "median"))
    equal = _num(_get(half, "same writes (4)", "platform_multiple", "median"))
    return Target(
        name,
        ours <= 3.0,
        f"{_times(ours)} raw (rounds' median); the raw baseline doing the same durable writes {_times(same)} raw, "
        f"the platform {_times(equal)} theirs at equal load",
    )


def connect(r: dict[str, Any]) -> Target:
    """Strict against bare connections and consumers; the same with the connect's fsynced writes made raw is
    said beside it (issue 17's yardstick for a gap that is nats-server's own)."""
    n = r.get("agents", 0)
    name = "agents online and bound ≤ 3x bare connections + consumer creations of the same run"
    bound = _num(_get(r, "connect", "all_bound_s"))
    base = r.get("baseline_connect", {})
    per_connection, made = _num(base.get("seconds")), _num(base.get("connections"))
    consumers = _num(base.get("seconds_consumers"))
    if bound is None or per_connection is None or not made or consumers is None:
        return Target(name, None, "phase 1 or its baseline did not finish")
    raw = per_connection * n / made + consumers
    # Two decimals: a 3.04x printed as 3.0x beside "NOT met" reads as a bug.
    measured = f"{bound:.1f} s vs {raw:.1f} s raw: {bound / raw:.2f}x at {n} agents"
    writes = _num(base.get("seconds_writes"))
    if writes is not None:
        measured += f"; with the connect's fsynced writes raw too ({raw + writes:.1f} s): {bound / (raw + writes):.2f}x"
    return Target(name, bound <= 3 * raw, measured)


def restart(r: dict[str, Any]) -> Target:
    n = r.get("agents", 0)
    name = "full restart of 10,000 agents with pending commands ≤ 60 s, 0 lost, 0 applied twice"
    total = _num(_get(r, "storm", "total_s"))
    lost, twice = _get(r, "storm", "lost"), _get(r, "storm", "applied_twice")
    if total is None:
        return Target(name, None, "phase 5 did not run or did not finish")
    pending = _get(r, "storm", "pending_commands")
    measured = f"{total:.1f} s for {n} agents and {pending} pending commands; lost {lost}, applied twice {twice}"
    if lost or twice:
        return Target(name, False, measured)
    if n < FLEET:
        return Target(name, None, measured, "run with --agents 10000")
    return Target(name, total <= 60.0, measured)


def offline(r: dict[str, Any]) -> Target:
    name = "every killed agent shown offline within 15 s"
    if "offline" not in r:
        return Target(name, None, "phase 4 did not run")
    worst = _num(_get(r, "offline", "max"))
    missing = _get(r, "offline", "missing") or []
    met = worst is not None and worst <= 15.0 and not missing
    return Target(name, met, f"max {'n/a' if worst is None else f'{worst:.1f} s'}, {len(missing)} never shown offline")


def writes(r: dict[str, Any]) -> Target:
    name = "stream + KV writes per command ≤ 4"
    per = _num(_get(r, "traffic", "attributed_per_command"))
    if per is None:
        return Target(name, None, "phase 7 did not run")
    return Target(name, per <= 4.0 + 1e-9, f"{per:.2f} (writes naming the commands' objects)")


def memory(r: dict[str, Any]) -> Target:
    name = "platform services ≤ 50 KB per connected cluster"
    per = _num(_get(r, "memory", "services_bytes_per_cluster"))
    if per is None:
        return Target(name, None, "not measured")
    return Target(name, per <= 50 * KB, f"{per / KB:.1f} KB per cluster")


def targets(r: dict[str, Any]) -> list[Target]:
    return [f(r) for f in (scale, throughput, tail, connect, restart, offline, writes, memory)]
