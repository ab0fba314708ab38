"""Health hears the fleet late: a delay on the platform's side is not taken for the clusters' silence.

In a reconnect storm nats-server's read loops fall seconds behind, and on a busy core health itself does: every
heartbeat then arrives late, and a cluster whose heartbeats took 9 s instead of a few milliseconds had 14 s
between two of them. Before, that was a cluster shown offline (and online again at its next heartbeat) although
its agent never stopped; a cluster that really stopped is still shown offline, as late as health hears."""

from __future__ import annotations

import random

from schemas import subjects
from schemas.messages import ClusterHealth, Heartbeat, Presence, encode
from services.bus import Delivery
from services.bus.memory import MemoryBus
from services.health.hearing import Lateness
from services.health.service import HealthMonitor, Settings

SKEW = {f"c{i}": random.Random(i).uniform(-30.0, 30.0) for i in range(40)}
"""Each agent's clock off the platform's by up to 30 s: what a cluster's heartbeats are late is its own."""


def test_the_fleet_heard_late_together_is_late_and_skewed_clocks_are_not() -> None:
    lateness = Lateness(span=5.0, cap=30.0)
    for second in range(0, 20):  # every cluster beats every 5 s, in step with none; on time
        for i, (name, skew) in enumerate(SKEW.items()):
            if second % 5 == i % 5:
                lateness.heard(name, 0.002 - skew, 1000.0 + second)
    assert lateness.behind(1020.0) < 0.01, "clocks 30 s apart are no delay"
    for second in range(20, 30):  # now the path holds every heartbeat 6 s
        for i, (name, skew) in enumerate(SKEW.items()):
            if second % 5 == i % 5:
                lateness.heard(name, 6.0 - skew, 1000.0 + second)
    assert 5.8 < lateness.behind(1030.0) <= 6.0, "6 s, less what the baselines rose meanwhile (1 % of 10 s)"


def test_one_cluster_late_on_its_own_moves_nothing() -> None:
    lateness = Lateness(span=5.0, cap=30.0)
    for second in range(0, 30):
        for i, name in enumerate(SKEW):
            if second % 5 == i % 5:
                late = 20.0 if name == "c3" and second >= 10 else 0.001
                lateness.heard(name, late, 1000.0 + second)
    assert lateness.behind(1030.0) < 0.01


def test_the_allowance_is_capped_and_ends_with_the_delay() -> None:
    lateness = Lateness(span=5.0, cap=10.0)
    for name in SKEW:
        lateness.heard(name, 0.0, 1000.0)
    for name in SKEW:
        lateness.heard(name, 60.0, 1004.0)
    assert lateness.behind(1004.0) == 10.0
    assert lateness.behind(1010.0) == 0.0, "nothing heard in the last heartbeat period: no delay assumed"
    for name in SKEW:
        lateness.heard(name, 0.0, 1011.0)
    assert lateness.behind(1011.0) == 0.0


def test_a_baseline_follows_a_clock_step_in_a_few_minutes() -> None:
    lateness = Lateness(span=5.0, cap=30.0)
    for name in SKEW:
        lateness.heard(name, 0.0, 1000.0)
    # The platform's clock is stepped 2 s forward: every heartbeat now reads 2 s late, for good.
    at = 1000.0
    while at < 1400.0:
        at += 5.0
        for name in SKEW:
            lateness.heard(name, 2.0, at)
    assert lateness.behind(at) < 0.1


def test_an_agent_that_floods_or_makes_up_its_sent_at_counts_once() -> None:
    lateness = Lateness(span=5.0, cap=30.0)
    fleet = ["a", "b", "c", "hostile"]
    for name in fleet:
        lateness.heard(name, 0.0, 1000.0)
    for tick in range(50):  # ten a second, each claiming to be 25 s late; the three others one each, on time
        lateness.heard("hostile", 25.0, 1000.1 + tick / 10)
    for name in fleet[:3]:
        lateness.heard(name, 0.0, 1004.0)
    assert lateness.behind(1005.0) == 0.0
    lateness.forget("a")
    lateness.forget("b")
    assert lateness.behind(1005.0) == 0.0, "one of two: the lower median"


def test_one_or_two_clusters_cannot_move_it_however_few_are_heard() -> None:
    # A platform of three: one stops, and the other two (hostile together) claim 25 s of lateness from then on.
    # The median of those heard would be theirs, and put off the stopped one's offline by 25 s.
    lateness = Lateness(span=5.0, cap=30.0)
    for name in ("stopped", "h1", "h2"):
        lateness.heard(name, 0.0, 1000.0)
    for tick in range(1, 40):
        for name in ("h1", "h2"):
            lateness.heard(name, 25.0, 1000.0 + tick)
        assert lateness.behind(1000.0 + tick) == 0.0, f"{tick} s after the other stopped"
    lateness.heard("third", 0.0, 1039.0)
    lateness.heard("third", 25.0, 1040.0)
    assert 24.0 < lateness.behind(1040.0) <= 25.0, "three clusters heard late, all of those heard: late"


def test_nonsense_from_an_agent_is_ignored() -> None:
    lateness = Lateness(span=5.0, cap=30.0)
    lateness.heard("c1", float("nan"), 1000.0)
    lateness.heard("c1", float("inf"), 1001.0)
    assert lateness.behind(1001.0) == 0.0


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_a_fleet_heard_late_stays_online_and_a_dead_cluster_still_goes_offline() -> None:
    bus = MemoryBus()
    await bus.declare_streams("platform")
    bucket = await bus.bucket(subjects.BUCKET_PRESENCE, Presence)
    clock = Clock(1000.0)
    monitor = HealthMonitor(Settings(offline_after=12.0, heartbeat_interval=5.0), bus, bucket, clock=clock)
    monitor.transitions.start()
    names = [
        f"c{i}" for i in range(40)
    ]  # three or more heard late by the first sweep after the stall (hearing.CORROBORATED)
    path = 0.005  # how long the way from an agent to health takes
    c7_heard = 0.0

    async def beat(name: str, sent: float) -> None:
        nonlocal c7_heard
        clock.now = sent + path
        if name == "c7":
            c7_heard = clock.now
        hb = Heartbeat(cluster=name, session="s", seq=1, sent_at=sent, health=ClusterHealth())
        await monitor.on_heartbeat(Delivery(subjects.heartbeat(name), encode(hb)))

    try:
        offline: set[str] = set()
        shown_c7 = 0.0
        for tick in range(0, 1200):  # 120 s in steps of 0.1 s
            at = 1000.0 + tick / 10
            if tick == 400:
                path = 9.0  # from 40 s on the platform holds every heartbeat 9 s (a gap of 14 s each)
            for i, name in enumerate(names):
                if name == "c7" and at >= 1060.0:
                    continue  # c7's agent stops for good at 60 s
                if tick % 50 == (i * 5) % 50:
                    await beat(name, at)
            if tick % 10 == 0:
                clock.now = at + path if path > 1 else at
                await monitor.sweep_once()
                await monitor.transitions.settled()
                now_offline = {n for n, p in monitor.presence.items() if not p.online}
                if "c7" in now_offline and "c7" not in offline:
                    shown_c7 = clock.now
                offline = now_offline
                assert offline <= {"c7"}, f"{offline} shown offline at {clock.now - 1000:.1f} s"
        assert offline == {"c7"}
        # c7's last heartbeat reached health 9 s late: it is shown offline 12 s plus that delay after it, at the
        # first sweep past that.
        assert 12.0 + 9.0 < shown_c7 - c7_heard <= 12.0 + 9.0 + 1.0
    finally:
        await monitor.transitions.stop()
