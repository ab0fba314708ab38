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
from schemas.retrying import NOT_LISTENING_BACKOFF, Retries


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
