"""The agent's link to the platform: the only part of the agent that imports ``nats``.

- ``connection``: one connection (publish, request, subscribe, stream publish, drain);
- ``dial``: the first connect, retried forever with jittered backoff;
- ``events``: nats-py's callbacks, reconnect/disconnect hooks, refusal and loss;
- ``commands``: this cluster's commands from its durable consumer (``CommandQueue``, ``Delivery``);
- ``messages``: what crosses it (``Incoming``, ``Published``, ``Subscription``, ``NatsIdentity``);
- ``watchdog``: a reconnect that stopped trying, found and started again;
- ``client``: nats-py's client with its fixes, and small helpers.

No nats-py type leaves this package.
"""

from agent.bus.client import redact
from agent.bus.commands import CommandQueue, Delivery
from agent.bus.connection import Connection, connect, request
from agent.bus.events import Hook
from agent.bus.messages import Incoming, NatsIdentity, Published, Subscription

__all__ = [
    "CommandQueue",
    "Connection",
    "Delivery",
    "Hook",
    "Incoming",
    "NatsIdentity",
    "Published",
    "Subscription",
    "connect",
    "redact",
    "request",
]
