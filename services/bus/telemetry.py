"""OpenTelemetry providers, made per service and passed in, never installed globally."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from opentelemetry.metrics import Meter
from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Tracer

from schemas.tracing import PassThroughTracer, file_exporter
from services.bus.settings import TelemetrySettings

logger = logging.getLogger(__name__)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exports_spans: bool = True
    """False: no span goes anywhere, so ``tracer`` only carries the trace on (``PassThroughTracer``)."""
    _pass_through: PassThroughTracer = field(default_factory=PassThroughTracer, init=False, repr=False)

    @classmethod
    def create(cls, service: str, settings: TelemetrySettings | None = None) -> Telemetry:
        settings = settings or TelemetrySettings()
        resource = Resource.create({"service.name": f"tether-{service}", "service.namespace": "tether"})
        tracer_provider = TracerProvider(resource=resource)
        exports_spans = False
        if settings.trace_file:
            tracer_provider.add_span_processor(SimpleSpanProcessor(file_exporter(settings.trace_file)))
            exports_spans = True
        readers: list[MetricReader] = []
        if settings.otlp_endpoint:
            try:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
                from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

                endpoint = settings.otlp_endpoint.rstrip("/")
                tracer_provider.add_span_processor(
                    BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint}/v1/traces"))
                )
                exports_spans = True
                readers.append(PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=f"{endpoint}/v1/metrics")))
            except ImportError:
                logger.warning("OTLP endpoint set but opentelemetry-exporter-otlp is not installed")
        if settings.prometheus_port is not None:
            try:
                from opentelemetry.exporter.prometheus import PrometheusMetricReader
                from prometheus_client import start_http_server

                start_http_server(settings.prometheus_port, addr=settings.prometheus_host)
                readers.append(PrometheusMetricReader())
            except ImportError:
                logger.warning("Prometheus port set but opentelemetry-exporter-prometheus is not installed")
        # An exemplar links a measurement to its span: with no span exported there is nothing to link to, and
        # sampling one was a good part of every counter's and histogram's cost (several per command).
        exemplars = None if exports_spans or os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()
        meter_provider = MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars)
        return cls(tracer_provider=tracer_provider, meter_provider=meter_provider, exports_spans=exports_spans)

    def tracer(self, name: str) -> Tracer:
        if not self.exports_spans:
            return self._pass_through
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
