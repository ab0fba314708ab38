"""The HTTP API's models (pydantic): what ``/openapi.json`` documents and the CLI reads."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorBody(ApiModel):
    code: str = Field(description="Machine-readable error code (HTTP-like: 400, 401, 403, 404, 409, 410, 503)")
    message: str = Field(description="What is wrong, for people")


class ErrorResponse(ApiModel):
    error: ErrorBody


class ConditionOut(ApiModel):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: datetime | None = None


class CapacityOut(ApiModel):
    cpu: float = Field(description="Allocatable CPU cores")
    memory: int = Field(description="Allocatable memory, bytes")


class ClusterOut(ApiModel):
    name: str
    display_name: str
    description: str
    labels: dict[str, str]
    local: bool
    state: Literal["pending", "connected", "disconnected"]
    online: bool
    last_seen: datetime | None = Field(description="Last heartbeat, on the platform's clock")
    connected_since: datetime | None
    agent_version: str
    kubernetes_version: str
    driver: str
    node_count: int
    nodes_ready: int
    capacity: CapacityOut
    conditions: list[ConditionOut]
    created_at: datetime | None


class ClusterListOut(ApiModel):
    items: list[ClusterOut]


class ClusterConnectIn(ApiModel):
    name: str = Field(description="DNS-1123 label", max_length=63)
    display_name: str = Field("", max_length=1024)
    description: str = Field("", max_length=1024)
    labels: dict[str, str] = Field(default_factory=dict)
    local: bool = Field(False, description="The cluster the platform itself runs on")
    token_ttl: float = Field(3600.0, description="Seconds the one-time token stays valid", ge=60, le=2592000)


class ClusterConnectOut(ApiModel):
    cluster: ClusterOut
    token: str = Field(description="One-time connect token; shown only once")
    expires_at: datetime
    nats_url: str = Field(description="Where the agent connects (outbound)")
    agent_command: str = Field(description="The command that runs this cluster's agent")


class HealthzOut(ApiModel):
    status: Literal["ok", "starting"]
    services: dict[str, bool]


class WhoAmIOut(ApiModel):
    user: str
    platform_admin: bool
