"""How long each step of an agent's bootstrap and hello takes in the registry (``tether.registry.bootstrap.step``).

The benchmark reads it from the registry's Prometheus port to say where an agent's token exchange goes
(record read, UID claim, token spent, consumer and event, JWT signed) and its hellos (``hello: ...``: record
read and check, consumer made sure of); an operator sees the same.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from opentelemetry.metrics import Histogram, Meter

T = TypeVar("T")

STEP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Steps:
    """Times the steps of a request into one histogram, one ``step`` attribute each; without a meter
    (tests) it only times."""

    def __init__(self, meter: Meter | None = None) -> None:
        self._histogram: Histogram | None = None
        if meter is not None:
            self._histogram = meter.create_histogram(
                "tether.registry.bootstrap.step",
                unit="s",
                description="Seconds each step of an agent's bootstrap (and hello: 'hello: ...') took in the registry",
                explicit_bucket_boundaries_advisory=STEP_BUCKETS,
            )

    @contextmanager
    def timed(self, step: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            if self._histogram is not None:
                self._histogram.record(time.perf_counter() - started, {"step": step})

    async def awaited(self, step: str, work: Awaitable[T]) -> T:
        """``await work``, timed as ``step`` (steps that run beside each other, each timed on its own)."""
        with self.timed(step):
            return await work
