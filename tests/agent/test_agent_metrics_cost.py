"""An agent whose metrics go nowhere makes no OpenTelemetry meter provider (issue 17, 10,000 agents connecting).

Nothing is collected without a reader, yet each agent made a provider: its resource detection took 0.33 ms of
every agent's start (the benchmark's workers start thousands), and each provider stayed registered at exit."""

from __future__ import annotations

import pytest

from agent.telemetry import AgentMetrics


def test_no_meter_provider_without_a_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("TETHER_AGENT_PROMETHEUS_PORT", raising=False)
    metrics = AgentMetrics("c1")
    assert metrics.provider is None
    # The instruments are there and take measurements (for nobody).
    metrics.applied.add(1)
    metrics.apply_seconds.record(0.1)
    metrics.reconnected()
    metrics.shutdown()
