"""The services' bus runtime: the only part of ``services`` that imports ``nats``.

Services use what this package exports, in Tether's types only (see README's
layout table): a ``Bus``, ``serve`` and its ``Runtime``, ``Records`` buckets, ``Delivery`` messages.
"""

from services.bus.connection import close, connect
from services.bus.endpoints import ServiceHost, call
from services.bus.interface import Bus, Consumer, Delivery, Endpoints, Handler, Host, Subscription
from services.bus.kv import Bucket
from services.bus.patience import until_done
from services.bus.records import Keep, Latest, Records, View
from services.bus.service import Options, Runtime, Service, serve
from services.bus.settings import BusSettings, FromEnv, ServiceSettings, TelemetrySettings, env
from services.bus.streams import ensure_bucket, ensure_platform_streams
from services.bus.telemetry import Telemetry

__all__ = [
    "Bucket",
    "Bus",
    "BusSettings",
    "Consumer",
    "Delivery",
    "Endpoints",
    "FromEnv",
    "Handler",
    "Host",
    "Keep",
    "Latest",
    "Options",
    "Records",
    "Runtime",
    "Service",
    "ServiceHost",
    "ServiceSettings",
    "Subscription",
    "Telemetry",
    "TelemetrySettings",
    "View",
    "call",
    "close",
    "connect",
    "ensure_bucket",
    "ensure_platform_streams",
    "env",
    "serve",
    "until_done",
]
