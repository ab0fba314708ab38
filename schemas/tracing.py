"""W3C trace context carried in NATS message headers.

Providers are never global: callers pass their tracer. Only the propagation
format is shared, so every component reads what every other one writes.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_propagator = TraceContextTextMapPropagator()


def inject(headers: dict[str, str] | None = None, context: Context | None = None) -> dict[str, str]:
    """Return ``headers`` with ``traceparent``/``tracestate`` of the current (or given) span."""
    carrier: dict[str, str] = dict(headers or {})
    _propagator.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, str] | None) -> Context:
    """The trace context a message carries (an empty context when it carries none)."""
    return _propagator.extract(dict(headers or {}))


def file_exporter(path: str) -> SpanExporter:
    """Spans as JSON lines appended to ``path`` (every process of a test run can share one file)."""
    out = open(path, "a", buffering=1)  # noqa: SIM115 - lives as long as the provider
    return ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
