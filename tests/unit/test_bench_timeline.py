"""The benchmark's timeline: nats-server's collections on the wall clock, slow commands grouped by when they
were sent, and cumulative counters turned into what happened in each bin."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from tests.bench.timeline import Mark, Samples, bins, gc_marks, load_line, slow_bursts, split_by_collections


def test_collections_are_placed_on_the_wall_clock(tmp_path: Path) -> None:
    log = tmp_path / "nats.log"
    log.write_text(
        "[11856] 2026/12/02 16:53:04.250000 [INF] Starting nats-server\n"
        "gc 1 @2.030s 0%: 0.10+2.0+0.010 ms clock, 0.20+0.22/0.96/0.36+0.021 ms cpu, 3->3->1 MB, 4 MB goal, "
        "0 MB stacks, 0 MB globals, 2 P\n"
        "[11856] 2026/12/02 16:53:10.000000 [INF] Server is ready\n"
        "gc 35 @62.500s 3%: 0.5+420+1.5 ms clock, 1.0+3/400/0+3.0 ms cpu, 350->360->180 MB, 360 MB goal, "
        "0 MB stacks, 0 MB globals, 2 P\n"
    )
    start = datetime.datetime(2026, 12, 2, 16, 53, 4, 250000, tzinfo=datetime.UTC).timestamp()
    marks = gc_marks(log)
    assert [m.gc for m in marks] == [1, 35]
    assert marks[1].start == pytest.approx(start + 62.5)
    assert marks[1].ms == pytest.approx(422.0)
    assert marks[1].end == pytest.approx(start + 62.922)
    assert marks[1].heap == "350->360->180 MB (goal 360)"
    assert gc_marks(tmp_path / "absent.log") == []


def test_the_slowest_percent_is_grouped_by_send_time() -> None:
    commands = [{"sent": 100.0 + i * 0.01, "rt": 0.005} for i in range(1000)]
    for i in (10, 12, 15, 700):  # three sent within 0.05 s of each other, one 6.9 s later
        commands[i]["rt"] = 0.3
    for i in range(900, 906):
        commands[i]["rt"] = 0.1
    p99, bursts = slow_bursts(commands)
    assert p99 == pytest.approx(0.1)
    assert [len(b) for b in bursts] == [3, 1, 6]
    assert bursts[0][0]["sent"] == pytest.approx(100.1)
    assert slow_bursts([]) == (0.0, [])


def test_bins_turn_cumulative_counters_into_each_bins_share(tmp_path: Path) -> None:
    path = tmp_path / "samples.jsonl"
    rows = [
        '{"disk": "vda", "interval": 0.05, "tick_ns": 10000000.0}',
        # t, cpu ns per group, disk: writes, ms writing, in flight, ms busy, flushes, ms flushing, discards, ms;
        # machine ticks: user, system, idle, iowait, steal
        '{"t": 10.00, "cpu": {"nats": 0, "lifecycle": 0}, "disk": [0, 0, 0, 0, 0, 0, 0, 0], '
        '"machine": [0, 0, 0, 0, 0], "nats_io": [0, 0], "nats_threads": {"R": 1, "D": 0}}',
        '{"t": 10.05, "cpu": {"nats": 30000000, "lifecycle": 10000000}, "disk": [10, 5, 1, 40, 4, 8, 0, 0], '
        '"machine": [3, 1, 5, 1, 0], "nats_io": [12, 4096], "nats_threads": {"R": 2, "D": 1}}',
        '{"t": 10.10, "cpu": {"nats": 40000000, "lifecycle": 10000000}, "disk": [12, 5, 0, 45, 5, 8, 2, 3], '
        '"machine": [6, 2, 13, 2, 2], "nats_io": [14, 8192], "nats_threads": {"R": 0, "D": 0}}',
    ]
    path.write_text("\n".join(rows) + "\n")
    (t1, first), (t2, second) = bins(Samples.load(path), 10.01, 10.11, 0.05)
    assert (t1, t2) == (pytest.approx(10.01), pytest.approx(10.06))
    assert first["nats"] == pytest.approx(30.0) and first["lifecycle"] == pytest.approx(10.0)
    assert first["writes"] == 10 and first["flushes"] == 4 and first["f_ms"] == pytest.approx(2.0)
    assert first["nD"] == 1 and first["syscw"] == 12 and first["idle"] == pytest.approx(50.0)
    assert second["nats"] == pytest.approx(10.0) and second["lifecycle"] == 0
    assert second["steal"] == pytest.approx(20.0) and second["iowait"] == pytest.approx(10.0)
    assert second["discards"] == 2 and second["d_ms"] == 3 and second["nD"] == 0
    # The machine was busy 40 ms in the second bin, our processes 10: another 30 went to processes not sampled.
    assert first["others"] == pytest.approx(0.0) and second["others"] == pytest.approx(30.0)


def test_commands_in_flight_during_a_collection_are_told_apart() -> None:
    mark = Mark(gc=7, start=10.0, ms=200.0, heap="")
    commands = [
        {"sent": 9.90, "rt": 0.050},  # done before the mark began
        {"sent": 9.95, "rt": 0.080},  # in flight when it began
        {"sent": 10.10, "rt": 0.010},  # sent during it
        {"sent": 10.20, "rt": 0.005},  # sent as it ended
        {"sent": 10.25, "rt": 0.005},  # after it
    ]
    clear, overlapping = split_by_collections(commands, [mark])
    assert [c["sent"] for c in clear] == [9.90, 10.25]
    assert [c["sent"] for c in overlapping] == [9.95, 10.10, 10.20]
    assert split_by_collections(commands, []) == (commands, [])


def test_a_windows_load_line_shares_the_machine_and_each_groups_cpu_per_command() -> None:
    # 10 s on 2 cores: 15 s busy, 4 idle, 1 waiting on the disk; some task waited for a core 6 s of the 10.
    whole = {"busy": 15_000.0, "idle": 4_000.0, "iowait": 1_000.0, "psi_cpu": 6_000.0, "nats": 6_000.0, "api": 0.0}
    line = load_line(whole, ["nats", "api", "lifecycle"], 10.0, 2000)
    assert "machine busy 75 %, CPU pressure 60 %" in line
    assert "nats 0.60 (3.00)" in line
    assert "api" not in line and "lifecycle" not in line  # no CPU, or not sampled: left out
