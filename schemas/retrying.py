"""Jittered exponential backoff, shared by every component that reconnects or retries.

Full jitter around the exponential curve keeps thousands of agents that lost
the same server from coming back in lock-step (a reconnect storm).
"""

from __future__ import annotations

import random


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
