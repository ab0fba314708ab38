"""Pure views: bus records -> API models, and error kinds -> HTTP statuses."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

from schemas.api import CapacityOut, ClusterOut, ConditionOut
from schemas.errors import TetherError
from schemas.messages import ClusterRecord, Condition, Presence

HTTP_STATUS = {"400": 400, "401": 401, "403": 403, "404": 404, "409": 409, "410": 410, "503": 503}


def http_status(error: TetherError) -> int:
    return HTTP_STATUS.get(error.code, 500)


def ts(seconds: float) -> datetime | None:
    return datetime.fromtimestamp(seconds, UTC) if seconds else None


def _condition(c: Condition) -> ConditionOut:
    return ConditionOut(
        type=c.type,
        status=c.status,
        reason=c.reason,
        message=c.message,
        last_transition_time=ts(c.last_transition_time),
    )


def cluster_view(record: ClusterRecord, presence: Presence | None) -> ClusterOut:
    """One cluster as people see it: registry facts plus health's presence."""
    online = bool(presence and presence.online and record.state == "connected")
    health = presence.health if presence else None
    conditions = [_condition(c) for c in presence.conditions] if presence else []
    return ClusterOut(
        name=record.name,
        display_name=record.display_name or record.name,
        description=record.description,
        labels=dict(record.labels),
        local=record.local,
        state=record.state,
        online=online,
        last_seen=ts(presence.last_seen) if presence else None,
        connected_since=ts(presence.connected_since) if presence and online else None,
        agent_version=(health.agent_version if health and health.agent_version else record.agent_version),
        kubernetes_version=(
            health.kubernetes_version if health and health.kubernetes_version else record.kubernetes_version
        ),
        driver=(health.driver if health and health.driver else record.driver),
        node_count=health.nodes_total if health else 0,
        nodes_ready=health.nodes_ready if health else 0,
        capacity=CapacityOut(
            cpu=health.capacity.cpu if health else 0.0, memory=health.capacity.memory if health else 0
        ),
        conditions=conditions,
        created_at=ts(record.created_at),
    )


def agent_command(nats_url: str, token: str) -> str:
    return f"tether agent run --server {shlex.quote(nats_url)} --token {shlex.quote(token)}"
