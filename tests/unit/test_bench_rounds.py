"""Phase 3's interleaved rounds: every side in every round, the order rotated, ratios taken within a round."""

from __future__ import annotations

import asyncio
import math

from tests.bench import rounds


def test_each_side_leads_in_turn() -> None:
    names = ["platform", "same", "raw"]
    assert [rounds.order(names, i)[0] for i in range(4)] == ["platform", "same", "raw", "platform"]
    assert rounds.order(names, 1) == ["same", "raw", "platform"]
    assert rounds.order([], 3) == []


def _side(name: str, per_s: list[float], lat: list[list[float]], calls: list[str]) -> rounds.Side:
    """A side whose maximum and round trips, call by call, are given; each call is logged in ``calls``."""
    tops, fixes = iter(per_s), iter(lat)

    async def fixed(rate: float, seconds: float) -> list[float]:
        calls.append(f"{name} fixed {rate:g}/s {seconds:g}s")
        return next(fixes)

    async def top(seconds: float) -> tuple[float, float]:
        calls.append(f"{name} max")
        per_s = next(tops)
        return per_s, 400 / per_s  # nats-server's ms a command: 4 ms at 100/s

    return rounds.Side(name, fixed, top)


def test_rounds_measure_every_side_back_to_back_and_settle_before_each_window() -> None:
    calls: list[str] = []

    async def settle() -> None:
        calls.append("settle")

    sides = [
        _side("platform", [100, 80], [[0.010] * 98 + [0.050] * 2, [0.020] * 100], calls),
        _side("raw", [400, 200], [[0.002] * 100, [0.004] * 98 + [0.010] * 2], calls),
    ]
    done = asyncio.run(rounds.measure(sides, 2, 50.0, 10.0, settle, lambda _line: None))
    assert calls == [
        "settle",
        "platform max",
        "settle",
        "raw max",
        "settle",
        "platform fixed 50/s 10s",
        "settle",
        "raw fixed 50/s 10s",
        "settle",
        "raw max",  # the second round starts with the other side
        "settle",
        "platform max",
        "settle",
        "raw fixed 50/s 10s",
        "settle",
        "platform fixed 50/s 10s",
    ]
    assert [r.p99 for r in done] == [{"platform": 0.050, "raw": 0.002}, {"raw": 0.010, "platform": 0.020}]

    s = rounds.summarize(done, 50.0)
    against = s["against"]["raw"]
    # Within each round: 100/400 and 80/200 of the maximum; 25x and 2x the p99.
    assert against["share_of_max"] == {"median": 0.325, "min": 0.25, "max": 0.4}
    assert math.isclose(against["p99_multiple"]["median"], 13.5)
    assert math.isclose(against["p99_multiple"]["min"], 2.0)
    # Pooled: the platform's 200 round trips' p99 is 0.020 (rank 198), raw's 0.004.
    assert math.isclose(s["sides"]["platform"]["pooled_p99"], 0.020)
    assert math.isclose(against["pooled_p99_multiple"], 5.0)
    assert s["sides"]["raw"]["commands"] == 200
    assert s["sides"]["platform"]["nats_ms_per_command"] == {"median": 4.5, "min": 4.0, "max": 5.0}
    lines = rounds.render(s)
    assert lines[0] == "interleaved rounds: 2, fixed rate 50/s"
    assert "platform against raw: max 32.5% (25.0%-40.0%)" in lines[-1]


def test_a_side_with_no_round_trips_gives_no_ratio_rather_than_a_crash() -> None:
    done = [rounds.Round(p99={"platform": 0.01, "raw": math.nan}, per_s={"platform": 10, "raw": 0}, round_trips={})]
    s = rounds.summarize(done, 5.0)
    assert math.isnan(s["against"]["raw"]["share_of_max"]["median"])
    assert math.isnan(s["against"]["raw"]["p99_multiple"]["median"])
    assert rounds.summarize([], 5.0) == {}


def test_a_baseline_is_also_held_to_the_tail_target_at_half_its_own_maximum() -> None:
    """The same writes at half their own maximum of the round, then raw JetStream at that rate: the target the
    platform is held to (p99 at half its own maximum against raw's at that rate), applied to the baseline."""
    calls: list[str] = []

    async def settle() -> None:
        return None

    same = _side("same", [300], [[0.004] * 100, [0.030] * 100], calls)
    sides = [
        _side("platform", [100], [[0.010] * 100], calls),
        rounds.Side(same.name, same.fixed, same.top, own_half=True),
        _side(rounds.RAW, [1000], [[0.002] * 100, [0.005] * 100], calls),
    ]
    done = asyncio.run(rounds.measure(sides, 1, 50.0, 10.0, settle, lambda _line: None))
    assert calls[-2:] == ["same fixed 150/s 10s", f"{rounds.RAW} fixed 150/s 10s"], calls
    assert done[0].own_half == {"same": (150.0, 0.030, 0.005)}
    s = rounds.summarize(done, 50.0)
    assert math.isclose(s["own_half"]["same"]["multiple_of_raw"]["median"], 6.0)
    # Each at half its own maximum: the platform's 10 ms against the same writes' 30 ms.
    assert math.isclose(s["own_half"]["same"]["platform_multiple"]["median"], 1 / 3)
    assert any("same at half its own max (150/s)" in line and "6.00x raw" in line for line in rounds.render(s))


def test_the_equal_load_comparison_is_also_pooled_over_the_rounds() -> None:
    """Single rounds moved by 10x either way: the round trips of every round at half each side's own maximum are
    also pooled, and the p99 taken over them all."""
    calls: list[str] = []

    async def settle() -> None:
        return None

    # Round 1: the same writes at half their maximum have one slow window; round 2 none.
    same = _side("same", [300, 300], [[0.004] * 100, [0.030] * 100, [0.004] * 100, [0.006] * 100], calls)
    sides = [
        _side("platform", [100, 100], [[0.010] * 100, [0.012] * 100], calls),
        rounds.Side(same.name, same.fixed, same.top, own_half=True),
        _side(rounds.RAW, [1000, 1000], [[0.002] * 100, [0.005] * 100, [0.002] * 100, [0.003] * 100], calls),
    ]
    done = asyncio.run(rounds.measure(sides, 2, 50.0, 10.0, settle, lambda _line: None))
    h = rounds.summarize(done, 50.0)["own_half"]["same"]
    # Per round: 10/30 and 12/6 (the median of two, 1.17x); pooled over 400 round trips: 12 ms against 30 ms.
    assert math.isclose(h["platform_multiple"]["median"], (1 / 3 + 2) / 2)
    assert math.isclose(h["pooled_p99"], 0.030)
    assert math.isclose(h["pooled_platform_multiple"], 0.4)
    assert math.isclose(h["pooled_multiple_of_raw"], 6.0)
    lines = rounds.render(rounds.summarize(done, 50.0))
    assert any("pooled 0.40x" in line for line in lines), lines


def test_at_equal_load_the_platform_is_measured_at_half_its_own_maximum_of_the_round() -> None:
    """The fixed rate is half the throughput phase's maximum; in a round where the platform is slower than in
    that phase, its fixed-rate window runs above half its maximum. Held to half its own maximum of the round as
    well, that window is what the same writes at half theirs are compared with."""
    calls: list[str] = []

    async def settle() -> None:
        return None

    # The fixed rate (50/s) is 5/6 of this round's platform maximum (60/s): its window there is slow (90 ms).
    platform = _side("platform", [60], [[0.090] * 100, [0.012] * 100], calls)
    same = _side("same", [300], [[0.004] * 100, [0.010] * 100], calls)
    sides = [
        rounds.Side(platform.name, platform.fixed, platform.top, own_half=True),
        rounds.Side(same.name, same.fixed, same.top, own_half=True),
        _side(rounds.RAW, [1000], [[0.002] * 100, [0.003] * 100, [0.005] * 100], calls),
    ]
    done = asyncio.run(rounds.measure(sides, 1, 50.0, 10.0, settle, lambda _line: None))
    assert "platform fixed 30/s 10s" in calls and "same fixed 150/s 10s" in calls, calls
    s = rounds.summarize(done, 50.0)
    # The platform held to its own target in the round: 12 ms against raw's 3 ms at 30/s.
    assert math.isclose(s["own_half"]["platform"]["multiple_of_raw"]["median"], 4.0)
    assert "platform_multiple" not in s["own_half"]["platform"]
    # At equal load: 12 ms against the same writes' 10 ms, not the fixed-rate window's 90 ms.
    h = s["own_half"]["same"]
    assert math.isclose(h["platform_multiple"]["median"], 1.2)
    assert math.isclose(h["pooled_platform_multiple"], 1.2)
    assert h["platform_at_own_half"] is True
    assert any("half its own max of each round against same" in line for line in rounds.render(s))


def test_the_half_maximum_windows_follow_the_rounds_order() -> None:
    calls: list[str] = []

    async def settle() -> None:
        return None

    a = _side("a", [100, 100], [[0.01] * 10] * 4, calls)
    b = _side("b", [300, 300], [[0.01] * 10] * 4, calls)
    sides = [
        rounds.Side(a.name, a.fixed, a.top, own_half=True),
        rounds.Side(b.name, b.fixed, b.top, own_half=True),
        _side(rounds.RAW, [1000, 1000], [[0.001] * 10] * 6, calls),
    ]
    asyncio.run(rounds.measure(sides, 2, 40.0, 10.0, settle, lambda _line: None))
    halves = [c for c in calls if "fixed" in c and "fixed 40/s" not in c and not c.startswith(rounds.RAW)]
    assert halves == ["a fixed 50/s 10s", "b fixed 150/s 10s", "b fixed 150/s 10s", "a fixed 50/s 10s"]
