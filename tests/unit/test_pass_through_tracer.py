"""A service that exports no spans carries the trace on without recording: same traceparent as the SDK's tracer."""

from __future__ import annotations

from pathlib import Path

from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.trace import TraceFlags

from schemas import tracing
from services.bus.settings import TelemetrySettings
from services.bus.telemetry import Telemetry


def test_a_root_starts_a_sampled_trace_and_a_child_continues_its_callers() -> None:
    tracer = tracing.PassThroughTracer()
    with tracer.start_as_current_span("root") as root:
        ctx = root.get_span_context()
        assert ctx.is_valid and ctx.trace_flags.sampled and not root.is_recording()
        sent = tracing.inject()
    assert sent["traceparent"] == f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-01"

    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"  # not sampled upstream
    with tracer.start_as_current_span("served", context=tracing.extract({"traceparent": caller})) as span:
        own = span.get_span_context()
        onward = tracing.inject()
    assert f"{own.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert own.span_id != 0xB7AD6B7169203331 and own.trace_flags == TraceFlags(TraceFlags.DEFAULT)
    assert onward["traceparent"] == f"00-0af7651916cd43dd8448eb211c80319c-{own.span_id:016x}-00"


def test_telemetry_records_spans_only_where_they_go_somewhere(tmp_path: Path) -> None:
    quiet = Telemetry.create("x", TelemetrySettings())
    assert isinstance(quiet.tracer("t"), tracing.PassThroughTracer)
    traced = Telemetry.create("x", TelemetrySettings(trace_file=str(tmp_path / "spans.jsonl")))
    assert isinstance(traced.tracer("t"), SdkTracer)
    with traced.tracer("t").start_as_current_span("kept"):
        pass
    traced.shutdown()
    quiet.shutdown()
    assert '"name": "kept"' in (tmp_path / "spans.jsonl").read_text()
