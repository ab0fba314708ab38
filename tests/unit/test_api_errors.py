"""How a service's error reaches an HTTP caller: its status, and when to try again (pure logic)."""

from __future__ import annotations

from schemas.errors import Internal, NotFound, Overloaded, Unavailable
from services.api import logic


def test_a_busy_service_is_429_with_its_wait_and_an_unavailable_one_503_with_a_second() -> None:
    busy = Overloaded("lifecycle is busy", retry_after=2.2)
    assert (logic.http_status(busy), logic.retry_after(busy)) == (429, 3)
    assert logic.retry_after(Overloaded("busy", retry_after=0.01)) == 1
    gone = Unavailable("lifecycle: NATS did not answer in time; try again")
    assert (logic.http_status(gone), logic.retry_after(gone)) == (503, logic.UNAVAILABLE_RETRY_AFTER)
    assert logic.retry_after(NotFound("no such tenant")) is None
    assert logic.http_status(Internal("boom")) == 500 and logic.retry_after(Internal("boom")) is None
