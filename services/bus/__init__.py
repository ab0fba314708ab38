"""The services' bus runtime: the only part of ``services`` that imports ``nats``."""

from nats.aio.client import Client as Connection
from nats.aio.msg import Msg
from nats.js import JetStreamContext as JetStream

from services.bus.connection import close, connect
from services.bus.endpoints import ServiceHost, call
from services.bus.kv import Bucket
from services.bus.settings import BusSettings, TelemetrySettings
from services.bus.streams import ensure_bucket, ensure_platform_streams
from services.bus.telemetry import Telemetry

__all__ = [
    "Bucket",
    "BusSettings",
    "Connection",
    "JetStream",
    "Msg",
    "ServiceHost",
    "Telemetry",
    "TelemetrySettings",
    "call",
    "close",
    "connect",
    "ensure_bucket",
    "ensure_platform_streams",
]
