"""The benchmark tells a cluster marked offline while its agent was beating (the platform's) from one whose
agent had itself been silent: each agent keeps when its heartbeats went out."""

from __future__ import annotations

from array import array

from tests.bench.run import OFFLINE_AFTER, offline_silences, silence_line
from tests.bench.worker import BenchAgent


def silence(beats: list[float], at: float, since: float) -> float:
    agent = BenchAgent.__new__(BenchAgent)  # only its heartbeat times matter here
    agent.beats = array("d", beats)
    return agent.silence(at, since)


def test_an_agent_s_silence_runs_from_its_last_heartbeat_before_the_mark() -> None:
    assert silence([100.0, 105.0, 110.0, 140.0], at=130.0, since=90.0) == 20.0
    assert silence([100.0], at=130.0, since=120.0) == 10.0  # nothing since: counted from ``since``
    assert silence([], at=130.0, since=120.0) == 10.0


def test_marks_are_split_by_whether_the_agent_was_silent() -> None:
    t0 = 1000.0
    marks = {"quiet": 1060.0, "never": 1070.0, "beating": 1050.0}
    silences = {"quiet": OFFLINE_AFTER + 3, "never": 75.0, "beating": 2.0}
    split = offline_silences(silences, marks, t0)
    assert split["agent_silent"] == 2
    assert split["no_beat_since_nats_started"] == 1
    assert split["agent_beating"] == [2.0]
    assert "1 while their agent was beating" in silence_line(split)
