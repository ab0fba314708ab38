"""OpenTelemetry providers, made per service and passed in, never installed globally."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from opentelemetry.metrics import Meter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.trace import Tracer

from schemas.tracing import file_exporter
from services.bus.settings import TelemetrySettings

logger = logging.getLogger(__name__)


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @classmethod
    def create(cls, service: str, settings: TelemetrySettings | None = None) -> Telemetry:
        settings = settings or TelemetrySettings()
        resource = Resource.create({"service.name": f"tether-{service}", "service.namespace": "tether"})
        tracer_provider = TracerProvider(resource=resource)
        if settings.trace_file:
            tracer_provider.add_span_processor(SimpleSpanProcessor(file_exporter(settings.trace_file)))
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
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        return cls(tracer_provider=tracer_provider, meter_provider=meter_provider)

    def tracer(self, name: str) -> Tracer:
        return self.tracer_provider.get_tracer(name)

    def meter(self, name: str) -> Meter:
        return self.meter_provider.get_meter(name)

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()
