"""Settings every service shares (where the bus is, where telemetry goes), and the one way any service's
settings are read from the environment.

A service's settings are a frozen dataclass with a docstring under each field; a field read from the
environment names its variable with ``env(...)``, a field that is itself a settings dataclass is read the
same way, nested. An unset or empty variable leaves the default.
"""

from __future__ import annotations

import os
import types
from collections.abc import Mapping
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass
from typing import Any, Self, Union, get_args, get_origin, get_type_hints


def env(variable: str, default: Any = MISSING) -> Any:
    """A settings field read from the environment variable ``variable``."""
    return field(default=default, metadata={"env": variable})


def read_env(cls: type[Any], environ: Mapping[str, str]) -> Any:
    """An instance of the settings dataclass ``cls`` from ``environ``."""
    hints = get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in fields(cls):
        kind = hints[f.name]
        if is_dataclass(kind):
            values[f.name] = read_env(kind, environ)  # type: ignore[arg-type]
            continue
        raw = _raw(f, environ)
        if raw is not None:
            values[f.name] = _parse(kind, raw, f.metadata["env"])
    return cls(**values)


def _raw(f: Field[Any], environ: Mapping[str, str]) -> str | None:
    variable = f.metadata.get("env")
    raw = environ.get(variable, "").strip() if variable else ""
    return raw or None


def _parse(kind: Any, raw: str, variable: str) -> Any:
    if get_origin(kind) in (Union, types.UnionType):
        kind = next(arg for arg in get_args(kind) if arg is not type(None))
    try:
        if kind is bool:
            return raw.lower() in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError:
        raise ValueError(f"{variable}={raw!r}: expected {getattr(kind, '__name__', kind)}") from None


class FromEnv:
    """Gives a settings dataclass ``from_env()``."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        return read_env(cls, os.environ if environ is None else environ)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class BusSettings(FromEnv):
    url: str = env("TETHER_NATS_URL", "nats://127.0.0.1:4222")
    """NATS server URL(s), comma-separated for a cluster."""

    user: str | None = env("TETHER_NATS_USER", None)
    """NATS user for platform services (None: no auth)."""

    password: str | None = env("TETHER_NATS_PASSWORD", None)
    """Password for ``user``."""

    creds_file: str | None = env("TETHER_NATS_CREDS", None)
    """A NATS ``.creds`` file (decentralized auth), instead of user/password."""

    ca_file: str | None = env("TETHER_NATS_CA", None)
    """CA certificate (PEM) to verify a TLS NATS server with; None: the system's trust store."""

    replicas: int = env("TETHER_REPLICAS", 1)
    """Replicas for streams and KV buckets: 1 embedded, 3 on a JetStream cluster."""

    request_timeout: float = env("TETHER_REQUEST_TIMEOUT", 5.0)
    """Seconds to wait for a reply from another service."""

    connect_timeout: int = env("TETHER_NATS_CONNECT_TIMEOUT", 2)
    """Seconds one attempt to connect (or reconnect) may take, handshake included. Short on purpose, measured:
    with 10 s the services got in while 10,000 agents were reconnecting after a restart of NATS, and then not
    one of their JetStream requests was answered for over a minute (two runs of two; nats-server's JetStream
    API idle, 9,956 of its 10,002 read loops waiting for a CPU); with 2 s their handshakes gave up until the
    storm had passed and they answered 36-43 s after NATS started (tests/bench/RESULTS.md, seventh stop)."""

    @property
    def servers(self) -> list[str]:
        return [s.strip() for s in self.url.split(",") if s.strip()]


@dataclass(frozen=True)
class TelemetrySettings(FromEnv):
    otlp_endpoint: str | None = env("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    """OTLP/HTTP endpoint (``http://collector:4318``); None: traces and metrics stay in-process."""

    prometheus_port: int | None = env("TETHER_PROMETHEUS_PORT", None)
    """Serve a Prometheus scrape endpoint on this port; None: no endpoint."""

    prometheus_host: str = env("TETHER_PROMETHEUS_HOST", "127.0.0.1")
    """Where the scrape endpoint listens: loopback unless asked (``TETHER_PROMETHEUS_HOST=0.0.0.0``)."""

    trace_file: str | None = env("TETHER_TRACE_FILE", None)
    """Append every finished span as a JSON line to this file (for tests and offline debugging)."""


@dataclass(frozen=True)
class ServiceSettings(FromEnv):
    """The part of every service's settings that is not its own."""

    bus: BusSettings = field(default_factory=BusSettings)
    """How to reach NATS."""

    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    """Where traces and metrics go."""

    start_patience: float = env("TETHER_START_PATIENCE", 600.0)
    """Seconds a start keeps trying its declarations and loads while NATS is busy (``services.bus.patience``),
    all its steps together; then the service ends, and its supervisor restarts it. A one-core machine's
    restart of 10,000 agents kept JetStream busy for over a minute."""


__all__ = ["BusSettings", "FromEnv", "ServiceSettings", "TelemetrySettings", "env", "read_env"]
