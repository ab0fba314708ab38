"""The agent's tracer provider: made once per process and passed in, never installed globally."""

from __future__ import annotations

import logging
import os

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

from schemas.tracing import file_exporter

logger = logging.getLogger(__name__)


def tracer_provider(cluster: str = "") -> TracerProvider:
    """Spans to OTLP (``OTEL_EXPORTER_OTLP_ENDPOINT``) and/or a JSON-lines file (``TETHER_TRACE_FILE``)."""
    attributes = {"service.name": "tether-agent", "service.namespace": "tether"}
    if cluster:
        attributes["tether.cluster"] = cluster
    provider = TracerProvider(resource=Resource.create(attributes))
    if path := os.environ.get("TETHER_TRACE_FILE"):
        provider.add_span_processor(SimpleSpanProcessor(file_exporter(path)))
    if endpoint := os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
            )
        except ImportError:
            logger.warning("OTLP endpoint set but opentelemetry-exporter-otlp is not installed")
    return provider
