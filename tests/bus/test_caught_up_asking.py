"""``BucketWatch.caught_up`` asks for the bucket's newest revision again while the stream has no leader to answer
(pure logic: the ask is a stand-in, no server). On a JetStream cluster the same is shown for real in
``tests/integration/test_view_failover.py``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from nats.errors import NoRespondersError
from nats.js.errors import ServiceUnavailableError

from schemas.errors import Unavailable
from schemas.messages import Presence
from services.bus.watching import BucketWatch


def _watch(newest: Callable[[], int]) -> BucketWatch[Presence]:
    async def ask() -> int:
        return newest()

    # No JetStream: ``caught_up`` with nothing to wait for never touches it.
    return BucketWatch(None, "KV_test", "$KV.test.", lambda key, headers, data: None, ask, None, [])  # type: ignore[arg-type]


async def test_a_read_asks_again_while_the_stream_elects_a_leader() -> None:
    answers: list[Exception | int] = [NoRespondersError(), ServiceUnavailableError(), 0]
    asked = 0

    def newest() -> int:
        nonlocal asked
        asked += 1
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    await _watch(newest).caught_up(timeout=5.0)
    assert asked == 3


async def test_a_stream_that_never_answers_ends_in_the_read_deadline_as_unavailable() -> None:
    def newest() -> int:
        raise NoRespondersError

    with pytest.raises(Unavailable, match=r"not caught up within 0\.5s"):
        await _watch(newest).caught_up(timeout=0.5)


async def test_an_error_that_is_not_an_election_is_not_asked_again() -> None:
    asked = 0

    def newest() -> int:
        nonlocal asked
        asked += 1
        raise PermissionError("denied")

    with pytest.raises(PermissionError):
        await _watch(newest).caught_up(timeout=5.0)
    assert asked == 1
