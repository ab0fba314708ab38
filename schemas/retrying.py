"""Jittered exponential backoff, shared by every component that reconnects or retries.

Full jitter around the exponential curve keeps thousands of agents that lost
the same server from coming back in lock-step (a reconnect storm).
"""

from __future__ import annotations

import random

from schemas.errors import NoResponders, Overloaded


def backoff_delay(
    attempt: int,
    *,
    base: float = 0.5,
    cap: float = 30.0,
    rng: random.Random | None = None,
) -> float:
    """Delay before retry ``attempt`` (0-based): uniform in [d/2, d], d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 30))
    r: float = rng.random() if rng else random.random()
    return ceiling / 2 + r * ceiling / 2


def jittered(period: float, spread: float = 0.25, rng: random.Random | None = None) -> float:
    """``period`` stretched or shrunk by up to ``spread`` of it, at random: the same on average.

    For timers every agent runs (a report, a pull that expires): a fleet that connected together, after a
    platform restart for one, would otherwise keep them in step for good, each period's work arriving at once."""
    r: float = rng.random() if rng else random.random()
    return period * (1.0 - spread + 2.0 * spread * r)


NOT_LISTENING_BACKOFF = (0.25, 2.0)
"""(base, cap) seconds between attempts while nobody listens on the subject (``NoResponders``)."""
OVERLOAD_JITTER = 0.25
"""A busy service's retry-after is stretched by up to this fraction, at random."""


class Retries:
    """How long to wait before asking a service again, by what the last attempt got; one per request.

    - ``Overloaded``: the service refused it with a time to come back (its admission's appointment): then,
      never sooner, a little later at random so that callers told the same time do not return together.
    - ``NoResponders``: nobody listens; NATS says so at once. The service is down or starting (after a restart
      of the platform every agent is back before the services have subscribed again). Asking again cost the
      service nothing, so ask again soon, jittered, with a short cap: a doubling backoff up to 30 s there kept
      agents asleep for seconds after the service was back (a restart at 100 agents: hellos answered p50
      3.1 s after NATS started, 2 ms of it in the registry).
    - anything else (a timeout: the service may be swamped; a link that is down): ``backoff`` doubling.
    """

    def __init__(
        self, backoff: tuple[float, float], not_listening: tuple[float, float] = NOT_LISTENING_BACKOFF
    ) -> None:
        self._backoff = backoff
        self._not_listening = not_listening
        self.failures = 0
        """Attempts that were not answered in time (nor refused as overloaded, nor unheard)."""
        self.unheard = 0
        """Attempts nobody listened to."""

    def after(self, exc: Exception) -> float:
        """Seconds to wait after ``exc`` before the next attempt."""
        if isinstance(exc, Overloaded):
            return exc.retry_after * random.uniform(1.0, 1.0 + OVERLOAD_JITTER)
        if isinstance(exc, NoResponders):
            self.unheard += 1
            return backoff_delay(self.unheard - 1, base=self._not_listening[0], cap=self._not_listening[1])
        self.failures += 1
        return backoff_delay(self.failures - 1, base=self._backoff[0], cap=self._backoff[1])
