"""The benchmark's table and its targets (printed as met / not met, never asserted)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tests.bench.targets import KB, Target


def _ms(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x * 1e3:.1f} ms"


def _s(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.1f} s"


def _le(x: float) -> str:
    if x is None or math.isnan(x):
        return "n/a"
    return "> 10 s" if math.isinf(x) else f"≤ {x * 1e3:g} ms"


def _get(d: dict[str, Any], *path: str, default: Any = math.nan) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _ratio(ours: Any, raw: Any) -> str:
    """``ours`` as a multiple (or share) of ``raw``."""
    try:
        value = float(ours) / float(raw)
    except (TypeError, ValueError, ZeroDivisionError):
        return "n/a"
    return "n/a" if math.isnan(value) else (f"{value:.0%}" if value < 1 else f"{value:.1f}x")


def render(r: dict[str, Any]) -> str:
    m = r.get("machine", {})
    lines = [
        f"Tether benchmark: {r.get('agents')} agents — {m.get('nproc')} CPUs ({m.get('cpu')}), "
        f"{m.get('memory_bytes', 0) / 1024**3:.1f} GiB, Python {m.get('python')}",
        *(
            [f"the simulated agents on CPUs {cpus['fleet']}, everything else on {cpus['platform']} (--fleet-cpus)"]
            if (cpus := r.get("cpus"))
            else []
        ),
        "",
        f"| {'figure':<52} | {'tether':<34} | {'raw NATS baseline (same run)':<40} |",
        f"|{'-' * 54}|{'-' * 36}|{'-' * 42}|",
    ]

    def row(name: str, tether: str, raw: str = "") -> None:
        lines.append(f"| {name:<52} | {tether:<34} | {raw:<40} |")

    c, b = r.get("connect", {}), r.get("baseline_connect", {})
    row(
        "(1) all agents connected and online",
        f"{_s(c.get('seconds', math.nan))} ({c.get('agents_per_s', math.nan):.0f}/s)",
        f"{b.get('connections')} bare connects: {b.get('per_s', math.nan):.0f}/s",
    )
    row(
        "    per agent, start → online p50 / p99",
        f"{_s(_get(c, 'online_after', 'p50'))} / {_s(_get(c, 'online_after', 'p99'))}",
    )
    row(
        "    all bound to their command consumer",
        _s(c.get("all_bound_s", math.nan)),
        f"{b.get('consumers', 0)} consumers, {b.get('streams', 1)} streams: {b.get('consumers_per_s', math.nan):.0f}/s",
    )
    hb = r.get("heartbeats", {})
    row(
        "(2) heartbeats processed, steady (offered N/5 s)",
        f"{_get(hb, 'steady', 'processed_per_s'):.0f}/s of {_get(hb, 'steady', 'offered_per_s'):.0f}/s",
    )
    row(
        "    steady lag p50 / p99 (health's histogram)",
        f"{_le(_get(hb, 'steady', 'lag_p50_le'))} / {_le(_get(hb, 'steady', 'lag_p99_le'))}",
    )
    row(
        "    capacity (burst, processed in order)",
        f"{_get(hb, 'capacity', 'processed_per_s'):.0f}/s",
        f"core NATS → 1 Python sub: {_get(hb, 'baseline_core', 'per_s'):.0f}/s",
    )
    row(
        "    burst lag p50 / p99",
        f"{_le(_get(hb, 'capacity', 'lag_p50_le'))} / {_le(_get(hb, 'capacity', 'lag_p99_le'))}",
    )
    cm = r.get("commands", {})
    f, bf = cm.get("fixed", {}), cm.get("baseline_fixed", {})
    row(
        f"(3) round trip at {f.get('rate', 0):g}/s p50 / p95 / p99",
        f"{_ms(f.get('p50'))} / {_ms(f.get('p95'))} / {_ms(f.get('p99'))}",
        f"JetStream {_ms(bf.get('p50'))} / {_ms(bf.get('p95'))} / {_ms(bf.get('p99'))}",
    )
    row("    of which the API call p50 / p99", f"{_ms(_get(f, 'api', 'p50'))} / {_ms(_get(f, 'api', 'p99'))}")
    if "after_max" in f:
        a = f["after_max"]
        row(
            f"    the same, in the maximum's wake (settled {f.get('settled_s', math.nan):.1f}s later)",
            f"{_ms(a.get('p50'))} / {_ms(a.get('p95'))} / {_ms(a.get('p99'))}",
        )
    mx, bm = cm.get("max", {}), cm.get("baseline_max", {})
    row(
        f"    max throughput ({mx.get('concurrency')} in flight)",
        f"{mx.get('per_s', math.nan):.0f}/s, p99 {_ms(mx.get('p99'))}",
        f"JetStream {bm.get('per_s', math.nan):.0f}/s, p99 {_ms(bm.get('p99'))}",
    )
    sw = cm.get("same_writes")
    if sw:
        row(
            f"    raw, the platform's {sw['writes']} writes + hops: max",
            f"{_ratio(mx.get('per_s'), _get(sw, 'max', 'per_s'))} of it",
            f"{_get(sw, 'max', 'per_s'):.0f}/s, p99 {_ms(_get(sw, 'max', 'p99'))}",
        )
        row(
            f"    raw, same writes: p99 at {f.get('rate', 0):g}/s",
            f"{_ratio(f.get('p99'), _get(sw, 'fixed', 'p99'))} of it",
            f"{_ms(_get(sw, 'fixed', 'p50'))} / {_ms(_get(sw, 'fixed', 'p95'))} / {_ms(_get(sw, 'fixed', 'p99'))}",
        )
        row(
            f"    raw, same writes: p99 at half its max ({_get(sw, 'half_own_max', 'rate'):g}/s)",
            "",
            f"{_ms(_get(sw, 'half_own_max', 'p50'))} / {_ms(_get(sw, 'half_own_max', 'p99'))}",
        )
    rd = cm.get("rounds")
    if rd:
        rounds_rows(rd, row)
    o = r.get("offline", {})
    row(
        f"(4) offline detection ({o.get('detected')}/{o.get('killed')} killed)",
        f"max {_s(o.get('max'))}, p99 {_s(o.get('p99'))}",
        f"bound: offline_after + sweep = {o.get('bound', math.nan):g} s",
    )
    s = r.get("storm", {})
    row(
        f"(5) NATS + services restart, {s.get('pending_commands')} commands pending",
        f"all done {_s(s.get('total_s'))}",
        f"nats-server ready {_s(s.get('nats_ready_s'))}",
    )
    row(
        "    back / resynced / pending applied",
        f"{_s(s.get('back_s'))} / {_s(s.get('resynced_s'))} / {_s(s.get('applied_s'))}",
    )
    row("    lost / applied twice", f"{s.get('lost')} / {s.get('applied_twice')}")
    mem = r.get("memory", {})
    row(
        "(6) services RSS growth per connected cluster",
        f"{mem.get('services_bytes_per_cluster', math.nan) / KB:.1f} KB",
    )
    per = mem.get("per_service_bytes_per_cluster", {})
    row("    by service", ", ".join(f"{k} {v / KB:.1f}" for k, v in per.items()) + " KB")
    row(
        "    NATS RSS growth per cluster",
        f"{mem.get('nats_bytes_per_cluster', math.nan) / KB:.1f} KB",
        f"per bare connection: {b.get('nats_bytes_per_connection', math.nan) / KB:.1f} KB",
    )
    if r.get("connect", {}).get("steps"):
        from tests.bench.run import connect_profile

        lines += ["", "(1) where the connect time goes"]
        lines += connect_profile(r["connect"])
    if "traffic" in r:
        from tests.bench.traffic import render as render_traffic

        lines += ["", "(7) messages and stream/KV writes"]
        lines += render_traffic(r["traffic"])
    lines += ["", "Targets:"]
    lines += [Target(**t).line() for t in r.get("targets", [])]
    return "\n".join(lines)


def rounds_rows(rd: dict[str, Any], row: Callable[..., None]) -> None:
    """The interleaved rounds (``tests.bench.rounds``): each side's median maximum and pooled p99, and the
    platform's share and multiple of each baseline (median of the rounds, their range)."""
    me = _get(rd, "sides", "platform")
    row(
        f"    interleaved, {rd['rounds']} rounds: platform max; p99 at {rd['rate']:g}/s",
        f"{_get(me, 'per_s', 'median'):.0f}/s; {_ms(_get(me, 'pooled_p99'))}",
    )
    for name, a in rd.get("against", {}).items():
        side = _get(rd, "sides", name)
        share, mult = a["share_of_max"], a["p99_multiple"]
        row(
            f"      against {name}",
            f"max {share['median']:.0%} ({share['min']:.0%}-{share['max']:.0%}); "
            f"p99 {mult['median']:.1f}x ({mult['min']:.1f}-{mult['max']:.1f}x)",
            f"{_get(side, 'per_s', 'median'):.0f}/s; p99 {_ms(_get(side, 'pooled_p99'))}",
        )
    for name, h in rd.get("own_half", {}).items():
        m = h["multiple_of_raw"]
        row(
            f"      {name} at half its own max ({h['rate']['median']:.0f}/s)",
            f"p99 {m['median']:.1f}x raw ({m['min']:.1f}-{m['max']:.1f}x), pooled "
            f"{h.get('pooled_multiple_of_raw', math.nan):.1f}x: the tail target, applied to it",
            f"{_ms(h['p99']['median'])}; raw {_ms(h['raw_p99']['median'])}",
        )
        if "platform_multiple" not in h:  # the platform itself, held to its target round by round
            continue
        e = h["platform_multiple"]
        at = "its own max of each round" if h.get("platform_at_own_half") else "its max"
        row(
            f"      platform at half {at} against {name} at half its own",
            f"p99 {e['median']:.1f}x ({e['min']:.1f}-{e['max']:.1f}x), "
            f"pooled {h.get('pooled_platform_multiple', math.nan):.1f}x",
        )
