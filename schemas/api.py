"""The HTTP API's models (pydantic): what ``/openapi.json`` documents and the CLI reads."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StringConstraints

from schemas.messages import ClusterEventKind, ControlPlaneHealth, Phase


class ApiModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --- bounds on what callers send (a request over them is a 400 naming the field, never a 500) -----------------
MAX_LABELS = 64
"""Labels (or selector terms) on one object."""
MAX_LIST = 1_000
"""Names in one list (a project's clusters, a team's members)."""
MAX_BODY = 1024 * 1024
"""Bytes of one request body (413 above it)."""

Label = Annotated[str, StringConstraints(max_length=253)]
"""A label key (the DNS-1123 prefix and name are checked by the service)."""
LabelValue = Annotated[str, StringConstraints(max_length=63)]
NameIn = Annotated[str, StringConstraints(max_length=63)]
Labels = Annotated[dict[Label, LabelValue], Field(max_length=MAX_LABELS)]


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


class ControlPlaneOut(ApiModel):
    project: str
    name: str
    replicas: int = Field(description="Desired control-plane replicas (0 while the tenant sleeps)")
    ready_replicas: int
    ready: bool = Field(default=False, description="Its pod is Ready and the tenant's API answers /readyz")
    version: str = Field(default="", description="The Kubernetes version the tenant runs now")
    pods: int = Field(default=0, description="Pods in the tenant's namespace (control plane and synced workloads)")
    reason: str = Field(default="", description="Why it is not ready (from its pod's status)")
    message: str = ""

    @classmethod
    def of(cls, plane: ControlPlaneHealth) -> ControlPlaneOut:
        """What a heartbeat said of one control plane, as the API shows it (the one place it is copied: each
        field of this model from the wire record's field of the same name)."""
        return cls.model_validate({field: getattr(plane, field) for field in cls.model_fields})


class VersionsOut(ApiModel):
    versions: list[str] = Field(description="Kubernetes versions a tenant cluster may run (v1.MINOR)")
    default: str = Field(description="The version of a tenant created without --version")
    upgrade: str = Field(description="How far one upgrade may go")
    engine: str = Field(description="What runs each tenant cluster's control plane")


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
    control_planes: list[ControlPlaneOut] = Field(
        default_factory=list, description="Readiness of each tenant cluster's control plane on this cluster"
    )


class ClusterListOut(ApiModel):
    items: list[ClusterOut]


class ClusterConnectIn(ApiModel):
    name: str = Field(description="DNS-1123 label", max_length=63)
    display_name: str = Field("", max_length=1024)
    description: str = Field("", max_length=1024)
    labels: Labels = Field(default_factory=dict, description=f"At most {MAX_LABELS}")
    local: StrictBool = Field(False, description="The cluster the platform itself runs on")
    token_ttl: float = Field(
        3600.0, description="Seconds the one-time token stays valid", ge=1, le=2592000, allow_inf_nan=False
    )
    rotate_token: StrictBool = Field(
        False, description="The name exists (pending or disconnected): issue a new connect token (else 409)"
    )


class ClusterConnectOut(ApiModel):
    cluster: ClusterOut
    token: str = Field(description="One-time connect token; shown only once")
    expires_at: datetime
    nats_url: str = Field(description="Where the agent connects (outbound)")
    agent_command: str = Field(description="The command that runs this cluster's agent")
    manifests: str = Field(
        "",
        description="Kubernetes manifests (multi-document YAML) that install this cluster's agent in the cluster "
        "itself: kubectl apply -f -. They hold the one-time token: keep them private.",
    )


class HealthzOut(ApiModel):
    status: Literal["ok", "starting"]
    services: dict[str, bool]


class WhoAmIOut(ApiModel):
    user: str
    platform_admin: bool


# --- users, teams, projects ---------------------------------------------------------------
RoleName = Literal["admin", "user", "viewer"]


class UserIn(ApiModel):
    name: str = Field(description="DNS-1123 label", max_length=63)
    email: str = Field("", max_length=254)
    platform_admin: StrictBool = Field(False, description="true or false (a JSON boolean, nothing else)")


class UserOut(ApiModel):
    name: str
    email: str
    platform_admin: bool
    created_at: datetime | None
    disabled: bool = False


class UserCreatedOut(ApiModel):
    user: UserOut
    token: str = Field(description="The user's API token; shown only once")


class UserListOut(ApiModel):
    items: list[UserOut]


class TeamIn(ApiModel):
    name: str = Field(max_length=63)
    members: list[NameIn] = Field(default_factory=list, max_length=MAX_LIST)


class TeamMemberIn(ApiModel):
    user: str = Field(max_length=63)


class TeamOut(ApiModel):
    name: str
    members: list[str]
    created_at: datetime | None


class TeamListOut(ApiModel):
    items: list[TeamOut]


class QuotaModel(ApiModel):
    tenants: int | None = Field(None, ge=0, le=1_000_000)
    spaces: int | None = Field(None, ge=0, le=1_000_000)
    cpu: float | None = Field(None, ge=0, le=10_000_000, allow_inf_nan=False, description="CPU cores")
    memory: int | None = Field(None, ge=0, le=2**62, description="Bytes")


class ProjectIn(ApiModel):
    name: str = Field(max_length=63)
    display_name: str = Field("", max_length=1024)
    clusters: list[NameIn] = Field(default_factory=list, max_length=MAX_LIST, description="Clusters it may use")
    cluster_selector: Labels = Field(default_factory=dict, description="Or clusters with these labels")
    quota: QuotaModel = Field(default_factory=QuotaModel)


class MemberOut(ApiModel):
    kind: Literal["user", "team"]
    name: str
    role: RoleName


class UsageOut(ApiModel):
    tenants: int
    spaces: int
    cpu: float
    memory: int


class ProjectOut(ApiModel):
    name: str
    display_name: str
    clusters: list[str]
    cluster_selector: dict[str, str]
    quota: QuotaModel
    members: list[MemberOut]
    usage: UsageOut
    my_role: RoleName | None = Field(description="The caller's role (None for a platform admin who is no member)")
    created_by: str
    created_at: datetime | None


class ProjectListOut(ApiModel):
    items: list[ProjectOut]


class MemberIn(ApiModel):
    user: str = Field("", max_length=63)
    team: str = Field("", max_length=63)
    role: RoleName


# --- tenant clusters and spaces ------------------------------------------------------------
class WorkloadIn(ApiModel):
    name: str = Field(max_length=63)
    cluster: str = Field("", max_length=63, description="Empty: the platform picks one")
    version: str = Field("", max_length=32, description="Tenant clusters: Kubernetes version, e.g. v1.36")
    sleep_after: float = Field(
        0, ge=0, le=315_360_000, allow_inf_nan=False, description="Tenant clusters: seconds idle before sleeping"
    )
    cpu: float | None = Field(
        None, ge=0, le=1_000_000, allow_inf_nan=False, description="CPU cores; default 1 (tenant cluster), 0.5 (space)"
    )
    memory: int | None = Field(None, ge=0, le=2**60, description="Bytes; default 2 Gi (tenant cluster), 1 Gi (space)")


class UpgradeIn(ApiModel):
    version: str = Field(max_length=32)


class RbacMemberOut(ApiModel):
    subject: str
    access: Literal["admin", "edit", "view"]


class DesiredOut(ApiModel):
    generation: int
    state: Literal["running", "sleeping", "deleted"]
    version: str
    cpu: float
    memory: int
    members: list[RbacMemberOut]
    operation: str
    op_id: str


class ObservedOut(ApiModel):
    generation: int
    state: Literal["running", "sleeping", "deleted"]
    version: str = Field(description="What the cluster runs (a tenant: its control plane's Kubernetes version)")
    at: datetime | None
    settled: bool = Field(
        default=True,
        description="False while the cluster still gets there (a tenant not Ready yet, a namespace still going)",
    )
    reason: str = Field(default="", description="Why it has not settled (e.g. from its control plane pod's status)")


class WorkloadOut(ApiModel):
    kind: Literal["tenant", "space"]
    name: str
    project: str
    cluster: str
    version: str
    phase: Phase
    desired: DesiredOut
    observed: ObservedOut | None
    in_sync: bool
    failure: str | None
    conditions: list[ConditionOut]
    sleep_after: float
    last_activity: datetime | None
    created_by: str
    created_at: datetime | None


class WorkloadListOut(ApiModel):
    items: list[WorkloadOut]


# --- cluster history and live events (web UI) ---------------------------------------------
class ClusterEventOut(ApiModel):
    kind: ClusterEventKind
    at: datetime
    reason: str = ""


class ClusterEventListOut(ApiModel):
    items: list[ClusterEventOut] = Field(description="Newest first")
    since: datetime = Field(description="Start of the window that was read")
    truncated: bool = Field(description="True when older events in the window were left out (limit reached)")


# --- outside event readers ------------------------------------------------------------------------
class EventsCredsIn(ApiModel):
    name: str = Field(description="Who reads (a DNS label); names the NATS user and its reply inbox")
    ttl_days: float = Field(30.0, gt=0, le=366, description="Days the credentials are valid (at most 366)")


class EventsCredsOut(ApiModel):
    name: str
    creds: str = Field(description="A NATS .creds file: read tether.events.> and replay EVENTS, nothing else")
    inbox_prefix: str = Field(description="The reply inbox prefix these credentials may use (--inbox-prefix)")
    expires_at: datetime
    nats_url: str = Field(description="Where to connect")
    stream: str = Field(description="The stream that keeps the events (for replay)")
    subjects: str = Field(description="The subjects these credentials may read")
