"""``--fleet-cpus``: which CPUs the simulated agents are held to, the rest left to the platform."""

from __future__ import annotations

import argparse
import os

import pytest

from tests.bench.run import cpu_list, parse_args


def test_a_list_of_single_cpus_and_ranges() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two CPUs: one for the fleet, one for the platform")
    last = allowed[-1]
    assert cpu_list(str(last)) == {last}
    assert cpu_list(f"{allowed[0]}-{allowed[0]}") == {allowed[0]}
    assert parse_args(["--fleet-cpus", str(last)]).fleet_cpus == {last}
    assert parse_args([]).fleet_cpus is None


@pytest.mark.parametrize("text", ["", "x", "1-", "-1", "1,,2"])
def test_what_is_not_a_cpu_list_is_refused(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not a CPU list"):
        cpu_list(text)


def test_cpus_this_process_may_not_use_are_refused() -> None:
    beyond = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(argparse.ArgumentTypeError, match="not all among"):
        cpu_list(str(beyond))


def test_the_fleet_cannot_take_every_cpu() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    with pytest.raises(argparse.ArgumentTypeError, match="leave none for the platform"):
        cpu_list(",".join(map(str, allowed)))
