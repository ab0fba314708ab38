"""The benchmark's verdicts: issue 17's ratio targets from a run's results, and "not measured" for a phase that
did not run instead of "not met"."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from tests.bench.report import render
from tests.bench.targets import Target, connect, restart, tail, targets, throughput, writes


def a_full_run(**changes: Any) -> dict[str, Any]:
    """The shape of a 10,000-agent run's results (the figures of one such run, rounded)."""
    r: dict[str, Any] = {
        "agents": 10_000,
        "connect": {"all_bound_s": 49.6},
        "baseline_connect": {"seconds": 11.0, "connections": 10_000, "seconds_consumers": 2.2, "seconds_writes": 9.4},
        "commands": {
            "max": {"per_s": 376.0},
            "baseline_max": {"per_s": 949.0},
            "rounds": {
                "against": {"raw JetStream (1 write)": {"share_of_max": {"median": 0.33}}},
                "own_half": {
                    "platform": {"multiple_of_raw": {"median": 13.5}},
                    "same writes (4)": {"multiple_of_raw": {"median": 5.5}, "platform_multiple": {"median": 0.65}},
                },
            },
        },
        "storm": {"total_s": 48.8, "lost": 0, "applied_twice": 0, "pending_commands": 1000},
        "offline": {"max": 13.1, "missing": []},
        "traffic": {"attributed_per_command": 4.0},
        "memory": {"services_bytes_per_cluster": 6.4 * 1024},
    }
    r.update(changes)
    return r


def verdicts(r: dict[str, Any]) -> dict[str, bool | None]:
    return {t.target: t.met for t in targets(r)}


def test_a_full_run_is_judged_target_by_target() -> None:
    found = {t.target.split(" ")[0] + " " + t.target.split(" ")[1]: t for t in targets(a_full_run())}
    assert [t.met for t in targets(a_full_run())] == [True, True, False, False, True, True, True, True]
    assert "33.0% of raw" in found["max commands/s"].measured
    # The tail and the connect say what the raw baseline doing the same durable writes reached beside them.
    assert "same durable writes 5.5x raw" in found["round-trip p99"].measured
    assert "0.7x theirs" in found["round-trip p99"].measured
    assert "3.76x" in found["agents online"].measured
    assert "(22.6 s): 2.19x" in found["agents online"].measured


def test_a_run_without_a_phase_says_not_measured_rather_than_not_met() -> None:
    assert set(verdicts({"agents": 10_000}).values()) == {None}
    only_the_restart = {k: v for k, v in a_full_run().items() if k in ("agents", "storm", "memory")}
    judged = {k: v for k, v in verdicts(only_the_restart).items() if v is not None}
    assert list(judged.values()) == [True, True]


def test_the_throughput_without_rounds_is_one_window_against_raw() -> None:
    r = a_full_run()
    del r["commands"]["rounds"]
    r["commands"]["max"]["per_s"], r["commands"]["baseline_max"]["per_s"] = 300.0, 1000.0
    assert throughput(r).met is True and "30.0% of raw (one window each)" in throughput(r).measured
    r["commands"]["max"]["per_s"] = 240.0
    assert throughput(r).met is False
    r["commands"]["max"]["per_s"] = math.nan
    assert throughput(r).met is None
    assert tail(r).met is None  # the tail target is judged round by round only


def test_a_tail_within_three_times_raw_is_met() -> None:
    r = a_full_run()
    r["commands"]["rounds"]["own_half"]["platform"]["multiple_of_raw"]["median"] = 2.9
    assert tail(r).met is True


def test_a_restart_that_lost_a_command_fails_at_any_size_and_a_small_fleets_time_is_not_judged() -> None:
    assert restart(a_full_run(storm={"total_s": 30.0, "lost": 1, "applied_twice": 0})).met is False
    assert restart(a_full_run(agents=1000, storm={"total_s": 75.0, "lost": 0, "applied_twice": 0})).met is None
    assert restart(a_full_run(storm={"total_s": 61.0, "lost": 0, "applied_twice": 0})).met is False


def test_the_connect_is_strict_against_bare_connections() -> None:
    assert connect(a_full_run(connect={"all_bound_s": 39.0})).met is True  # 39.0 ≤ 3 x 13.2
    assert connect(a_full_run(connect={"all_bound_s": 40.0})).met is False
    no_writes = a_full_run()
    del no_writes["baseline_connect"]["seconds_writes"]
    assert "fsynced" not in connect(no_writes).measured
    assert connect(a_full_run(baseline_connect={})).met is None


def test_writes_per_command_over_four_are_not_met() -> None:
    assert writes(a_full_run(traffic={"attributed_per_command": 4.02})).met is False
    assert writes(a_full_run(traffic={"attributed_per_command": 4.0})).met is True


def test_the_printout_marks_each_verdict() -> None:
    r = a_full_run()
    del r["offline"], r["traffic"], r["commands"]["rounds"]  # no phases 4 and 7; phase 3 without --rounds
    r["targets"] = [dataclasses.asdict(t) for t in targets(r)]
    printed = render(r).split("Targets:")[1].splitlines()[1:]
    marks = [line[3:10] for line in printed]
    assert marks == ["    met", "    met", "    n/a", "NOT met", "    met", "    n/a", "    n/a", "    met"]
    assert Target("x", None, "y", "z").line() == "  [    n/a] x: y (z)"
