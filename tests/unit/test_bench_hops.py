"""The per-hop profile of phase 3: each command's clocks split into hops that add up to its round trip."""

from __future__ import annotations

import math

from tests.bench.run import Stamps

ROUND_TRIP_HOPS = (
    "http+api+request",
    "desired record published",
    "desired write stored + to the agent + apply",
    "result write + lifecycle fetch",
    "result record published",
)


def test_the_round_trips_hops_add_up_to_it_and_the_answer_branches_off_at_the_publish() -> None:
    sent, answered = 100.0, 100.012
    stamp = Stamps(1, decided=100.002, published=100.003, applied=100.009, folded=100.011, observed=100.014)
    hops = stamp.hops(sent, answered)
    assert hops is not None
    assert set(hops) == {*ROUND_TRIP_HOPS, "answer (desired write's ack, audit write, reply, HTTP)"}
    assert math.isclose(sum(hops[h] for h in ROUND_TRIP_HOPS), stamp.observed - sent)
    assert math.isclose(hops["answer (desired write's ack, audit write, reply, HTTP)"], answered - stamp.published)
    assert math.isclose(hops["desired write stored + to the agent + apply"], stamp.applied - stamp.published)


def test_a_command_whose_result_was_not_seen_has_no_hops() -> None:
    assert Stamps(1, decided=1.0, published=1.1).hops(0.9, 1.2) is None
