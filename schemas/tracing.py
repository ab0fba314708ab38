"""W3C trace context carried in NATS message headers.

Providers are never global: callers pass their tracer. Only the propagation
format is shared, so every component reads what every other one writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util import types

_propagator = TraceContextTextMapPropagator()
_ids = RandomIdGenerator()


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


class PassThroughTracer(trace.Tracer):
    """The tracer of a process that exports no spans: the trace goes on through it, nothing is recorded.

    Each span it starts is a non-recording one with its own span id, in its parent's trace (with its parent's
    sampling flag) or, with no parent, in a new sampled trace: on the wire (``traceparent``) and in audit
    records it looks the same as the SDK's default tracer, so a process that exports spans further on still
    continues the trace. What it saves is the SDK's span object (attributes, events, times, the end), which
    without an exporter was made and dropped for every request and message (several per command).
    """

    def start_span(
        self,
        name: str,
        context: Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[trace.Link] | None = None,
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, flags, state = parent.trace_id, parent.trace_flags, parent.trace_state
        else:
            trace_id, flags, state = _ids.generate_trace_id(), TraceFlags(TraceFlags.SAMPLED), TraceState()
        own = SpanContext(trace_id, _ids.generate_span_id(), is_remote=False, trace_flags=flags, trace_state=state)
        return NonRecordingSpan(own)

    @contextlib.contextmanager
    def start_as_current_span(  # type: ignore[override]
        self, name: str, context: Context | None = None, *_args: Any, end_on_exit: bool = True, **_kwargs: Any
    ) -> Iterator[Span]:
        with trace.use_span(self.start_span(name, context), end_on_exit=end_on_exit) as span:
            yield span
