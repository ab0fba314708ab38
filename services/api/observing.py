"""Traces and metrics for every HTTP request (pure ASGI, so streams pass untouched)."""

from __future__ import annotations

import time

from opentelemetry.trace import SpanKind, Status, StatusCode
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import tracing
from services.bus.telemetry import Telemetry

TRACE_HEADERS = frozenset({b"traceparent", b"tracestate"})
"""The W3C trace-context headers (``schemas.tracing``'s propagator reads these and no other); ASGI lowercases
header names."""


class Observe:
    """A server span per request (continuing a caller's W3C trace), and the request-duration histogram."""

    def __init__(self, inner: ASGIApp, telemetry: Telemetry) -> None:
        self.inner = inner
        self.tracer = telemetry.tracer("tether.api")
        self.duration = telemetry.meter("tether.api").create_histogram(
            "tether.api.request.duration",
            unit="s",
            description="API request latency",
            explicit_bucket_boundaries_advisory=[
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1.0,
                2.5,
                5.0,
            ],
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.inner(scope, receive, send)
            return
        # Only what the trace context is read from (every header decoded was a good part of this middleware).
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", []) if k in TRACE_HEADERS}
        status = 500
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        with self.tracer.start_as_current_span(
            f"HTTP {scope['method']}", context=tracing.extract(headers), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.inner(scope, receive, capture)
            finally:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                span.update_name(f"{scope['method']} {route}")
                span.set_attribute("http.request.method", scope["method"])
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                self.duration.record(
                    time.perf_counter() - started,
                    {"method": scope["method"], "route": route, "status": str(status)},
                )
