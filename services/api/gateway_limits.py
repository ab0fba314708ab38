"""A rate limit per member on the Kubernetes gateway: a token bucket each, in bounded memory.

Every proxied request takes a token (a watch or ``logs -f`` is one request however long it lasts); a member
out of tokens is answered 429 with ``Retry-After`` (kubectl waits and retries by itself). Buckets live in
an LRU of ``MAX_MEMBERS``: an evicted bucket was the least recently used, and an idle bucket refills to full
anyway, so forgetting it changes nothing for an honest member. Written here rather than taken from a library:
the libraries found keep one key per caller without a bound on their number (expiry by time only), and
the bound is the point.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable

RATE = float(os.environ.get("TETHER_GATEWAY_RATE", "50"))
"""Requests per second each member may make through the gateway, sustained (0: no limit)."""
BURST = float(os.environ.get("TETHER_GATEWAY_BURST", "300"))
"""Requests a member may make at once (kubectl's discovery, a script's loop)."""
MAX_MEMBERS = 10_000
"""Buckets kept at once."""


class MemberLimiter:
    def __init__(
        self,
        rate: float = RATE,
        burst: float = BURST,
        max_members: int = MAX_MEMBERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.max_members = max_members
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        """user -> (tokens, when counted)."""

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, user: str) -> int:
        """0 when ``user`` may go on (a token taken); else the whole seconds until a token is there."""
        if self.rate <= 0:
            return 0
        now = self._clock()
        tokens, at = self._buckets.pop(user, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[user] = (tokens, now)
        while len(self._buckets) > self.max_members:
            self._buckets.popitem(last=False)
        return 0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate))
