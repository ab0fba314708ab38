"""How a caller asks a service again (the agent's hello, bootstrap, renewal, result), by what the last attempt
got (issue 17).

After a restart of the platform every agent reconnects before the registry has subscribed, and its hello is
told at once that nobody listens. A doubling backoff there (0.5 s up to 30 s) kept agents asleep for seconds
after the registry was back; a timeout or a busy platform still backs off as before.
"""

from __future__ import annotations

import random

import pytest

from agent.identity.calls import RETRY_BACKOFF
from schemas.errors import Internal, NoResponders, Overloaded, Unavailable
from schemas.retrying import NOT_LISTENING_BACKOFF, Retries, jittered


@pytest.fixture(autouse=True)
def _seeded() -> None:
    random.seed(17)


def test_nobody_listening_is_asked_again_soon_jittered_and_never_later_than_the_cap() -> None:
    retries = Retries(RETRY_BACKOFF)
    delays = [retries.after(NoResponders("no service answers")) for _ in range(200)]
    _base, cap = NOT_LISTENING_BACKOFF
    assert max(delays) <= cap <= 2.0
    # A minute of nobody listening costs a few dozen requests, not hundreds: no retry storm.
    assert sum(delays[:40]) >= 30
    # Jittered: callers that lost the service together do not come back together.
    assert len({round(d, 3) for d in delays[10:]}) > 150


def test_a_timeout_backs_off_doubling_up_to_the_long_cap() -> None:
    retries = Retries(RETRY_BACKOFF)
    delays = [retries.after(Unavailable("no reply within 30s")) for _ in range(12)]
    base, cap = RETRY_BACKOFF
    assert base / 2 <= delays[0] <= base
    assert max(delays) <= cap and delays[-1] >= cap / 2
    assert delays[6] > NOT_LISTENING_BACKOFF[1]


def test_an_internal_error_backs_off_like_a_timeout() -> None:
    retries = Retries(RETRY_BACKOFF)
    delays = [retries.after(Internal("boom")) for _ in range(8)]
    base, cap = RETRY_BACKOFF
    assert delays[-1] >= min(cap, base * 2**7) / 2


def test_a_busy_platform_is_visited_when_it_says_never_sooner() -> None:
    retries = Retries(RETRY_BACKOFF)
    for _ in range(50):
        delay = retries.after(Overloaded("busy", retry_after=7.0))
        assert 7.0 <= delay <= 7.0 * 1.25


def test_nobody_listening_does_not_lengthen_the_backoff_of_timeouts_nor_the_other_way() -> None:
    retries = Retries(RETRY_BACKOFF)
    for _ in range(10):
        retries.after(NoResponders("no service answers"))
    assert retries.after(Unavailable("no reply")) <= RETRY_BACKOFF[0]
    for _ in range(10):
        retries.after(Unavailable("no reply"))
    assert retries.after(NoResponders("no service answers")) <= NOT_LISTENING_BACKOFF[1]


def test_a_fleets_periodic_timers_drift_out_of_step_and_keep_their_period_on_average() -> None:
    period = 120.0
    waits = [jittered(period) for _ in range(10_000)]
    assert 0.75 * period <= min(waits) and max(waits) <= 1.25 * period
    assert abs(sum(waits) / len(waits) - period) < 1.0, "the same rate of reports on average"
    # 1,000 agents that reported together (a platform restart): after three periods they are spread over a
    # minute and more, not a second.
    at = [0.0] * 1000
    for _ in range(3):
        at = [t + jittered(period) for t in at]
    assert max(at) - min(at) > 60.0
    per_second = [0] * 1000
    for t in at:
        per_second[int(t)] += 1
    assert max(per_second) < 40, "at most a few percent of the fleet in any one second"
