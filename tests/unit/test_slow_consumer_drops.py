"""A service's connection counts what nats-py drops per subscription and says it once in a while."""

from __future__ import annotations

import logging

import pytest
from nats.errors import SlowConsumerError

from services.bus.connection import _Drops
from services.bus.limits import GuardedClient


def test_drops_are_counted_per_subscription_and_said_once_a_period(caplog: pytest.LogCaptureFixture) -> None:
    nc = GuardedClient()
    drops = _Drops("health", nc)
    with caplog.at_level(logging.WARNING, logger="services.bus.connection"):
        for _ in range(1_000):
            drops.count(SlowConsumerError(subject="tether.hb.c1", reply="", sid=7, sub=None))  # type: ignore[arg-type]
        drops.count(SlowConsumerError(subject="tether.evt.x", reply="", sid=9, sub=None))  # type: ignore[arg-type]
    assert nc.dropped[7] == 1_000 and nc.dropped[9] == 1 and nc.dropped[8] == 0
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "nats (health): slow consumer on tether.hb.c1: 1 message(s) dropped since the last report",
        "nats (health): slow consumer on tether.evt.x: 1 message(s) dropped since the last report",
    ]
