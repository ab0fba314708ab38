"""Settings every service shares: where the bus is, and where telemetry goes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass(frozen=True)
class BusSettings:
    url: str = "nats://127.0.0.1:4222"
    """NATS server URL(s), comma-separated for a cluster."""

    user: str | None = None
    """NATS user for platform services (None: no auth)."""

    password: str | None = None
    """Password for ``user``."""

    creds_file: str | None = None
    """A NATS ``.creds`` file (decentralized auth), instead of user/password."""

    ca_file: str | None = None
    """CA certificate (PEM) to verify a TLS NATS server with; None: the system's trust store."""

    replicas: int = 1
    """Replicas for streams and KV buckets: 1 embedded, 3 on a JetStream cluster."""

    request_timeout: float = 5.0
    """Seconds to wait for a reply from another service."""

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.url.split(",") if s.strip()]

    @classmethod
    def from_env(cls) -> BusSettings:
        return cls(
            url=os.environ.get("TETHER_NATS_URL", cls.url),
            user=os.environ.get("TETHER_NATS_USER") or None,
            password=os.environ.get("TETHER_NATS_PASSWORD") or None,
            creds_file=os.environ.get("TETHER_NATS_CREDS") or None,
            ca_file=os.environ.get("TETHER_NATS_CA") or None,
            replicas=int(os.environ.get("TETHER_REPLICAS", "1")),
            request_timeout=float(os.environ.get("TETHER_REQUEST_TIMEOUT", "5")),
        )


@dataclass(frozen=True)
class TelemetrySettings:
    otlp_endpoint: str | None = None
    """OTLP/HTTP endpoint (``http://collector:4318``); None: traces and metrics stay in-process."""

    prometheus_port: int | None = None
    """Serve a Prometheus scrape endpoint on this port; None: no endpoint."""

    prometheus_host: str = "127.0.0.1"
    """Where the scrape endpoint listens: loopback unless asked (``TETHER_PROMETHEUS_HOST=0.0.0.0``)."""

    trace_file: str | None = None
    """Append every finished span as a JSON line to this file (for tests and offline debugging)."""

    @classmethod
    def from_env(cls) -> TelemetrySettings:
        port = os.environ.get("TETHER_PROMETHEUS_PORT")
        return cls(
            otlp_endpoint=os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None,
            prometheus_port=int(port) if port else None,
            prometheus_host=os.environ.get("TETHER_PROMETHEUS_HOST") or "127.0.0.1",
            trace_file=os.environ.get("TETHER_TRACE_FILE") or None,
        )


@dataclass(frozen=True)
class ServiceSettings:
    """The part of every service's settings that is not its own."""

    bus: BusSettings = field(default_factory=BusSettings)
    """How to reach NATS."""

    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    """Where traces and metrics go."""

    @classmethod
    def from_env(cls) -> ServiceSettings:
        return cls(bus=BusSettings.from_env(), telemetry=TelemetrySettings.from_env())
