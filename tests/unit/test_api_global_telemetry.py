"""The API reports only to the telemetry providers it is given, never to OpenTelemetry's global ones.

FastAPI (0.165 on) traces and measures every request on the global providers by itself whenever one is set
(an auto-instrumentation, another library), beside the API's own spans and metrics (``Observe``, on the
providers passed in): a second span per request, and a look at the global providers on every request even when
none is set (1.6 % of the API's CPU samples at the benchmark's maximum). In a subprocess: a global provider set
here would stay set for every later test in this process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent(
    """
    import asyncio

    import httpx
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from services.api.app import create_app
    from services.api.auth import Platform
    from services.bus.memory import MemoryBus

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    async def main() -> None:
        app = create_app(Platform(bus=MemoryBus(), nats_url="nats://127.0.0.1:4222"))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            answer = await client.get("/healthz")
        data = reader.get_metrics_data()
        scopes = [s for r in (data.resource_metrics if data else []) for s in r.scope_metrics]
        points = sum(len(m.data.data_points) for s in scopes for m in s.metrics)
        print(answer.status_code, len(spans.get_finished_spans()), points)

    asyncio.run(main())
    """
)


def test_a_request_reports_nothing_to_the_global_providers() -> None:
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert run.returncode == 0, run.stderr
    status, spans, points = run.stdout.split()
    assert status == "503"  # answered: no service is up on this bus
    assert (spans, points) == ("0", "0"), f"global spans {spans}, global metric points {points}"
