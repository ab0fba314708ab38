"""Tether's platform services. They never import each other: they talk over NATS subjects."""

VERSION = "0.1.0"
