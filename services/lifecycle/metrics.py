"""Lifecycle's instruments: commands issued, applied and failed, their latency, resyncs, and what waits."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from schemas.messages import WorkloadRecord
from services.bus import Telemetry
from services.lifecycle import logic

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Seconds: commands take milliseconds when the agent is there, minutes when it is not."""


class Tally:
    """A counter per cluster, counted in a dict and read when the metrics are collected (an observable counter).

    A command counts twice (issued, applied); an OpenTelemetry counter's ``add`` hashes its attributes and walks
    the SDK's readers and views on every call (10 us, against 0.1 for the dict), and the exporter reads the same
    cumulative sums either way."""

    def __init__(self, meter: Meter, name: str, description: str) -> None:
        self.counts: dict[str, int] = {}
        meter.create_observable_counter(name, callbacks=[self._observe], description=description)

    def add(self, cluster: str, n: int = 1) -> None:
        self.counts[cluster] = self.counts.get(cluster, 0) + n

    def _observe(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"cluster": cluster}) for cluster, n in self.counts.items()]


class Metrics:
    def __init__(self, telemetry: Telemetry) -> None:
        meter = telemetry.meter("tether.lifecycle")
        self.issued = Tally(meter, "tether.commands.issued", "Commands sent to agents")
        self.applied = Tally(meter, "tether.commands.applied", "Commands agents applied")
        self.failed = Tally(meter, "tether.commands.failed", "Commands agents could not apply")
        self.superseded = Tally(
            meter,
            "tether.commands.superseded",
            "Commands superseded by a newer one before their cluster saw them (coalesced)",
        )
        self.resyncs = Tally(meter, "tether.resyncs", "Inventories reconciled")
        # Fleet-wide, unlike the counters: 16 series per cluster (160,000 at 10,000 clusters) for a figure the
        # dashboard sums by bucket anyway; a slow cluster shows in its pending gauge and its agent's own
        # ``tether_agent_apply_duration_seconds``.
        self.latency = meter.create_histogram(
            "tether.command.latency",
            unit="s",
            description="From the desired-state write to the agent's result, over the fleet",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.pending: dict[str, int] = {}
        meter.create_observable_gauge(
            "tether.commands.pending",
            callbacks=[self._observe_pending],
            description="Desired changes not yet applied, per cluster",
        )

    def _observe_pending(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"cluster": cluster}) for cluster, n in self.pending.items()]

    def count_pending(self, records: Iterable[WorkloadRecord]) -> None:
        # A cluster seen before and now without anything pending reports 0, not its last count.
        pending = dict.fromkeys(self.pending, 0)
        for r in records:
            pending[r.spec.cluster] = pending.get(r.spec.cluster, 0) + (0 if logic.in_sync(r) else 1)
        self.pending = pending
