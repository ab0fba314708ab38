"""The services' bus runtime: the only part of ``services`` that imports ``nats``.

Services use what this package exports, in Tether's types only (see /work/wt/notes/BUS.md and README's
layout table): a ``Bus``, ``serve`` and its ``Runtime``, ``Records`` buckets, ``Delivery`` messages.
"""

# nats-py's own types, only until lifecycle and the API run on ``Bus`` (then they go, and the strict import
# contract with them).
from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.js import JetStreamContext as JetStream

from services.bus.connection import close, connect
from services.bus.endpoints import ServiceHost, call
from services.bus.interface import Bus, Consumer, Delivery, Endpoints, Handler, Host, Subscription
from services.bus.kv import Bucket
from services.bus.records import Records
from services.bus.service import Options, Runtime, Service, serve
from services.bus.settings import BusSettings, FromEnv, ServiceSettings, TelemetrySettings, env
from services.bus.streams import ensure_bucket, ensure_platform_streams
from services.bus.telemetry import Telemetry

__all__ = [
    "Bucket",
    "Bus",
    "BusSettings",
    "Connection",
    "Consumer",
    "Delivery",
    "Endpoints",
    "FromEnv",
    "Handler",
    "Host",
    "JetStream",
    "Msg",
    "Options",
    "Records",
    "Runtime",
    "Service",
    "ServiceHost",
    "ServiceSettings",
    "Subscription",
    "Telemetry",
    "TelemetrySettings",
    "call",
    "close",
    "connect",
    "ensure_bucket",
    "ensure_platform_streams",
    "env",
    "serve",
]
