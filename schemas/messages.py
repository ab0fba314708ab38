"""Messages that cross the bus: one frozen, versioned ``msgspec.Struct`` each.

Rules (as in Temporal's payloads): a message type is never changed
incompatibly. New fields get defaults, so an old reader ignores them and a new
reader of an old message fills them in. An incompatible change is a new type
with a new tag (``...v2``). Times are seconds since the epoch (float, UTC).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Protocol, TypeVar

import msgspec
from msgspec import Meta

from schemas.errors import InvalidInput
from schemas.names import check_name


class Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every bus message; the tag names type and version."""


M = TypeVar("M", bound=Message)

_encoder = msgspec.json.Encoder()


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def decode(data: bytes, type_: type[M]) -> M:
    """Decode ``data`` as ``type_``; raise InvalidInput saying what is wrong."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"invalid {type_.__name__} message: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidInput(f"malformed {type_.__name__} message: {exc}") from None


def to_builtins(msg: Any) -> Any:
    return msgspec.to_builtins(msg)


# --- bounds on what agents send ------------------------------------------------------
# An agent runs on infrastructure the platform does not control: every field it sends is bounded here, so a
# message that breaks a bound fails to decode (dropped or terminated with a log line) before any service
# acts on it. Stored records reuse some of these types; the bounds are generous enough that anything the
# platform writes itself stays within them (strings it copies from agents are cut with ``clip`` first).
MAX_NAME = 63
"""DNS-1123 label: cluster, project, tenant and space names."""
MAX_SHORT = 128
"""Versions, drivers, sessions, operation ids, reasons."""
MAX_TEXT = 16_384
"""Free text from a cluster (an error message); the platform keeps at most ``MAX_KEPT_TEXT`` of it."""
MAX_KEPT_TEXT = 1_024
"""Characters of an agent's free text kept in records and events."""
MAX_SECRET = 1_024
"""Tokens, credentials, keys."""
MAX_OBJECTS = 5_000
"""Tenant clusters and spaces one cluster may report (inventory items, control planes)."""
MAX_GENERATION = 2**53 - 1
"""Generations stay exact in every JSON reader (JavaScript's safe integers)."""
MAX_TIME = 4_102_444_800.0
"""Seconds since the epoch: 2100-01-01. A finite, representable time; later ones are refused."""
MAX_COUNT = 1_000_000
"""Nodes, replicas, sequence-like counters that are not sequences."""
MAX_EARLIER_RESULTS = 16
"""Earlier generations one result may carry (``CommandResult.earlier``)."""

NAME_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
"""A DNS-1123 label (as ``schemas.names.check_name``): names become KV keys and subject tokens, so a name
with a dot or a wildcard from an agent must never reach a key."""

AgentName = Annotated[str, Meta(min_length=1, max_length=MAX_NAME, pattern=NAME_PATTERN)]
Short = Annotated[str, Meta(max_length=MAX_SHORT)]
Text = Annotated[str, Meta(max_length=MAX_TEXT)]
Secret = Annotated[str, Meta(max_length=MAX_SECRET)]
Generation = Annotated[int, Meta(ge=0, le=MAX_GENERATION)]
Time = Annotated[float, Meta(ge=0, le=MAX_TIME)]
Count = Annotated[int, Meta(ge=0, le=MAX_COUNT)]


def clip(text: str, limit: int = MAX_KEPT_TEXT) -> str:
    """``text`` cut to ``limit`` characters (marked with an ellipsis), for what the platform keeps of it."""
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


# --- shared pieces ---------------------------------------------------------------
class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """A fact about an object, Kubernetes-style."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: float = 0.0


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    cpu: Annotated[float, Meta(ge=0, le=10_000_000)] = 0.0
    """CPU cores (allocatable)."""
    memory: Annotated[int, Meta(ge=0, le=2**62)] = 0
    """Bytes (allocatable)."""


class ControlPlaneHealth(msgspec.Struct, frozen=True, kw_only=True):
    """One tenant cluster's control plane on the connected cluster (0/0 while it sleeps)."""

    project: AgentName
    name: AgentName
    replicas: Count = 0
    ready_replicas: Count = 0
    ready: bool = False
    """The control plane's pod is Ready and (on real clusters) the tenant's API answered ``/readyz``."""
    version: Short = ""
    """The Kubernetes version the tenant's control plane runs now (empty while none runs)."""
    pods: Count = 0
    """Pods in the tenant's namespace: its control plane and the workloads synced from inside it."""
    reason: Short = ""
    """Why it is not ready (from its pod's status), e.g. ``Unschedulable``."""
    message: Text = ""


class ClusterHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent reports about its cluster."""

    nodes_ready: Count = 0
    nodes_total: Count = 0
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    kubernetes_version: Short = ""
    agent_version: Short = ""
    driver: Short = ""
    api_reachable: bool = True
    """False when the agent runs but cannot reach its cluster's API server."""
    control_planes: Annotated[tuple[ControlPlaneHealth, ...], Meta(max_length=MAX_OBJECTS)] = ()
    """Readiness of every tenant cluster's control plane."""


# --- heartbeats ---------------------------------------------------------------------
class Heartbeat(Message, frozen=True, tag="heartbeat.v1"):
    cluster: AgentName
    session: Short
    """Random per agent process; a new one means the agent restarted."""
    seq: Annotated[int, Meta(ge=0, le=2**63 - 1)]
    sent_at: Time
    """Agent clock, informational only: presence uses the platform's clock."""
    health: ClusterHealth


# --- registry records and endpoints ---------------------------------------------------
class ClusterRecord(Message, frozen=True, tag="cluster-record.v1"):
    """The registry's record of a cluster (KV ``tether-clusters``)."""

    name: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    local: bool = False
    created_at: float = 0.0
    state: Literal["pending", "connected", "disconnected"] = "pending"
    token_hash: str = ""
    """SHA-256 of the one-time connect token; empty once spent."""
    token_expires_at: float = 0.0
    """When the connect token stops working (kept after it is spent: its agent's retry is answered until then)."""
    cluster_uid: str = ""
    credential_hash: str = ""
    """SHA-256 of the agent's long-lived credential."""
    nats_user: str = ""
    """The agent's NATS user public key; revoked in the account when the cluster is disconnected."""
    connected_at: float = 0.0
    disconnected_at: float = 0.0
    agent_version: str = ""
    kubernetes_version: str = ""
    driver: str = ""
    spent_token_hash: str = ""
    """SHA-256 of the connect token this record was connected with: a retry of that bootstrap by the same agent
    (same NATS key, same cluster UID) is answered again until the token's expiry, writing nothing."""


class ClusterCreate(Message, frozen=True, tag="cluster-create.v1"):
    name: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    local: bool = False
    token_ttl: float = 3600.0
    rotate_token: bool = False
    """Connecting a name that exists issues a new connect token only with this (else a conflict)."""


class ClusterConnectInfo(Message, frozen=True, tag="cluster-connect-info.v1"):
    cluster: ClusterRecord
    token: str
    """The one-time connect token, shown once."""
    expires_at: float


class NameRequest(Message, frozen=True, tag="name-request.v1"):
    name: str


class Empty(Message, frozen=True, tag="empty.v1"):
    pass


class ClusterList(Message, frozen=True, tag="cluster-list.v1"):
    clusters: list[ClusterRecord]


class AgentBootstrap(Message, frozen=True, tag="agent-bootstrap.v1"):
    """An agent's first call: trade the one-time token for its own credential."""

    token: Secret
    cluster_uid: Short
    agent_version: Short = ""
    kubernetes_version: Short = ""
    driver: Short = ""
    user_public_key: Secret = ""
    """The agent's own NATS user nkey (public part); its seed never leaves the agent."""
    protocol: int = 1
    """``AGENT_PROTOCOL`` of the agent; absent (1) from agents older than the field, which never read a welcome
    (``AgentCredentials.welcome``) and say hello, where an agent of an older protocol is told to upgrade."""


class AgentCredentials(Message, frozen=True, tag="agent-credentials.v1"):
    cluster: str
    credential: str
    jwt: str = ""
    """The agent's NATS user JWT (empty when the broker does not enforce identities)."""
    expires_at: float = 0.0
    """When ``jwt`` expires; the agent renews it at about three quarters of its life."""
    welcome: AgentWelcome | None = None
    """The answer to the agent's first hello, given here when the registry knows its command consumer is there
    (made when the cluster was registered): the agent then says no first hello (one request fewer per connect).
    None (and from older registries): the agent says hello as before."""


class AgentRenew(Message, frozen=True, tag="agent-renew.v1"):
    """Ask for a fresh NATS user JWT before the current one expires."""

    cluster: AgentName
    credential: Secret


AGENT_PROTOCOL = 2
"""How this version's agent takes its commands: 2, from its own cluster's desired state (a durable consumer on
the desired-state bucket's stream). 1 (agents that send no ``protocol``): from a ``CMD_*`` work-queue stream,
which the platform no longer has."""


class AgentHello(Message, frozen=True, tag="agent-hello.v1"):
    """Sent on every (re)connect; refused once the cluster is disconnected, or when the agent speaks a protocol
    the platform no longer serves."""

    cluster: AgentName
    credential: Secret
    cluster_uid: Short
    agent_version: Short = ""
    kubernetes_version: Short = ""
    driver: Short = ""
    protocol: int = 1
    """``AGENT_PROTOCOL`` of the agent; absent (1) from agents older than the field."""
    consumer_bound: bool = False
    """The agent is bound to its command consumer and its fetches find it (a hello after a reconnect): the
    registry need not look it up. False (and from older agents): the registry makes sure of it. An agent whose
    fetch finds the consumer gone says hello again with False."""
    consumer_gone: bool = False
    """A fetch found the command consumer gone (its state is in nats-server's memory: a lone server's restart
    loses it): the registry makes it without looking it up first (a look-up that can only answer "not found",
    for each agent of a restarted server)."""


class AgentWelcome(Message, frozen=True, tag="agent-welcome.v1"):
    cluster: str
    heartbeat_interval: float
    consumer: str = ""
    """The agent's durable consumer, which the registry made sure of before answering: the agent binds to it
    without asking JetStream first (empty: an older registry; the agent looks it up itself)."""
    unheard_backoff: float = 0.0
    """Longest wait, in seconds, between the agent's attempts of a request nobody listens to (the platform's
    services restarting), sized by the registry to the fleet: 10,000 agents asking every 2 s sent ~6,000
    requests a second to a NATS server that was starting those services (0: an older registry; the agent's
    default)."""


class ControlNotice(Message, frozen=True, tag="control-notice.v1"):
    """Core-NATS notice to one agent.

    ``revoked``: the cluster was disconnected; the agent stops. ``listening``: the registry (re)started and
    serves hellos now; an agent whose hello nobody answered asks again at once instead of at the end of its
    backoff (an agent of an earlier version logs the notice and ignores it)."""

    kind: Literal["revoked", "listening"]
    reason: str = ""


# --- health ---------------------------------------------------------------------------
class Presence(Message, frozen=True, tag="presence.v1"):
    """Health's view of one cluster (KV ``tether-presence``); platform clock."""

    cluster: str
    online: bool = False
    last_seen: float = 0.0
    connected_since: float = 0.0
    """Start of the current online period (0 when offline)."""
    session: str = ""
    health: ClusterHealth = msgspec.field(default_factory=ClusterHealth)
    conditions: tuple[Condition, ...] = ()
    unheard: bool = False
    """Online as stored before the health replica answering started listening, not heard since: its agent is
    presumably reconnecting after a platform restart. Set in health's answers only, never stored."""


class PresenceList(Message, frozen=True, tag="presence-list.v1"):
    items: list[Presence]


# --- access ---------------------------------------------------------------------------------
class UserRecord(Message, frozen=True, tag="user-record.v1"):
    name: str
    email: str = ""
    platform_admin: bool = False
    created_at: float = 0.0
    disabled: bool = False
    """A disabled user's tokens are refused until the user is enabled again."""


class TokenRecord(Message, frozen=True, tag="token-record.v1"):
    user: str
    created_at: float = 0.0
    name: str = ""
    """What the token is for (free text, shown in listings)."""
    expires_at: float = 0.0
    """0: never."""


class Authenticate(Message, frozen=True, tag="authenticate.v1"):
    token: str


class Principal(Message, frozen=True, tag="principal.v1"):
    user: str
    platform_admin: bool = False


class AdminBootstrap(Message, frozen=True, tag="admin-bootstrap.v1"):
    """Make sure the first platform admin exists with this token (idempotent)."""

    name: str
    token: str


# --- public events (tether.events.>) ------------------------------------------------------
ClusterEventKind = Literal["registered", "connected", "online", "offline", "disconnected", "removed"]
"""What happened to a cluster (the last token of its event's subject); the API's history says the same."""


class ClusterEvent(Message, frozen=True, tag="cluster-event.v1"):
    """Published on ``tether.events.cluster.<kind>``."""

    kind: ClusterEventKind
    cluster: str
    at: float
    reason: str = ""


class MessageDropped(Message, frozen=True, tag="message-dropped.v1"):
    """Published on ``tether.events.message.dropped``: a service gave up on a message of a stream after it
    failed ``deliveries`` times (or could never be handled), so it no longer blocks the ones after it."""

    consumer: str
    subject: str
    stream_seq: int
    deliveries: int
    reason: str
    at: float


class ClusterUidClaim(Message, frozen=True, tag="cluster-uid-claim.v1"):
    """Registry's duplicate guard: a physical cluster UID belongs to one cluster name."""

    cluster: str


# =====================================================================================
# Projects, access, tenant clusters and spaces
# =====================================================================================
Role = Literal["admin", "user", "viewer"]
"""A member's role in a project."""

AccessLevel = Literal["admin", "edit", "view"]
"""What a member gets inside one tenant cluster or space (its RBAC on the cluster)."""

WorkloadKind = Literal["tenant", "space"]
DesiredState = Literal["running", "sleeping", "deleted"]

Phase = Literal["Pending", "Ready", "Sleeping", "Upgrading", "Deleting", "Failed"]
"""Where a tenant cluster or space stands; lifecycle keeps it on every write of its record."""
EventPhase = Literal[Phase, "Deleted"]
"""The phases lifecycle announces (``WorkloadEvent.phase``): a deleted object has no record left to show."""
Action = Literal["sleep", "wake", "upgrade", "delete"]
"""What a user may ask of an existing tenant cluster or space (a space: only delete)."""
Operation = Literal["create", "sleep", "wake", "upgrade", "delete", "access", "resync"]
"""What produced a generation: a create, a user's action, a change of members' access, or a resync."""

AccessAction = Literal[
    "cluster.connect",
    "cluster.disconnect",
    "cluster.read",
    "user.create",
    "user.list",
    "team.create",
    "team.manage",
    "project.create",
    "project.read",
    "project.manage",
    "workload.read",
    "workload.create",
    "workload.manage",
]
"""What access decides about (``Authorize.action``); its permission matrix says who may do each."""


def own_only(user: str, project: str, owner: str = "") -> str:
    """Why a project user may not manage a tenant cluster or space: it is not theirs. Said by access when asked
    about a known owner, and by lifecycle when an action says whose the record must be (``owned_by``)."""
    theirs = f" (this one belongs to {owner!r})" if owner else ""
    return f"user {user!r} may manage only their own tenants and spaces in project {project!r}{theirs}"


class Identified(Protocol):
    """Anything that names one tenant cluster or space: a spec, a ref, a result, an inventory item, ..."""

    @property
    def kind(self) -> WorkloadKind: ...
    @property
    def project(self) -> str: ...
    @property
    def name(self) -> str: ...


def workload_key(w: Identified) -> str:
    """The one string key of a tenant cluster or space, ``<kind>.<project>.<name>``; every part is checked to
    be a DNS-1123 label, so no key can hold a wildcard."""
    return f"{w.kind}.{check_name(w.project, 'project name')}.{check_name(w.name, f'{w.kind} name')}"


def desired_key(cluster: str, k: str) -> str:
    """The KV key (in ``desired_bucket(cluster)``) of the record of workload ``k`` (a ``workload_key``) placed on
    ``cluster``: cluster first, so one cluster's records are one subject filter (its agent's consumer)."""
    return f"{check_name(cluster, 'cluster name')}.{k}"


def ref_of(w: Identified) -> WorkloadRef:
    """``w``'s identity as a value (hashable: the key of in-memory maps of workloads)."""
    if isinstance(w, WorkloadRef):
        return w
    return WorkloadRef(kind=w.kind, project=w.project, name=w.name)


class Quota(msgspec.Struct, frozen=True, kw_only=True):
    """Per-project limits; None means unlimited."""

    tenants: int | None = None
    spaces: int | None = None
    cpu: float | None = None
    """CPU cores."""
    memory: int | None = None
    """Bytes."""


class Resources(msgspec.Struct, frozen=True, kw_only=True):
    cpu: float = 0.0
    memory: int = 0


class ProjectRecord(Message, frozen=True, tag="project-record.v1"):
    """Registry KV ``tether-projects``."""

    name: str
    display_name: str = ""
    clusters: tuple[str, ...] = ()
    """Clusters the project may use, by name (empty with an empty selector: any)."""
    cluster_selector: dict[str, str] = msgspec.field(default_factory=dict)
    """Or any cluster whose labels match all of these."""
    quota: Quota = msgspec.field(default_factory=Quota)
    created_by: str = ""
    created_at: float = 0.0
    deleting: bool = False
    """Being deleted with its tenants and spaces: nothing new is created in it."""

    def allows(self, cluster: ClusterRecord) -> bool:
        """May this project use ``cluster``? (No list and no selector: any cluster.)"""
        if not self.clusters and not self.cluster_selector:
            return True
        if cluster.name in self.clusters:
            return True
        return bool(self.cluster_selector) and all(cluster.labels.get(k) == v for k, v in self.cluster_selector.items())


class ProjectCreate(Message, frozen=True, tag="project-create.v1"):
    name: str
    display_name: str = ""
    clusters: tuple[str, ...] = ()
    cluster_selector: dict[str, str] = msgspec.field(default_factory=dict)
    quota: Quota = msgspec.field(default_factory=Quota)
    created_by: str = ""


class ProjectList(Message, frozen=True, tag="project-list.v1"):
    projects: list[ProjectRecord]


class NamesRequest(Message, frozen=True, tag="names-request.v1"):
    """A filter by names; ``all`` ignores ``names``."""

    names: tuple[str, ...] = ()
    all: bool = False


class TeamRecord(Message, frozen=True, tag="team-record.v1"):
    name: str
    members: tuple[str, ...] = ()
    created_at: float = 0.0


class Membership(Message, frozen=True, tag="membership.v1"):
    """Access KV ``tether-members``: who has which role in one project."""

    project: str
    users: dict[str, Role] = msgspec.field(default_factory=dict)
    teams: dict[str, Role] = msgspec.field(default_factory=dict)


class MemberChange(Message, frozen=True, tag="member-change.v1"):
    """Set (role) or remove (role None) one user's or team's membership."""

    project: str
    user: str = ""
    team: str = ""
    role: Role | None = None


class UserCreate(Message, frozen=True, tag="user-create.v1"):
    name: str
    email: str = ""
    platform_admin: bool = False


class UserCreated(Message, frozen=True, tag="user-created.v1"):
    user: UserRecord
    token: str
    """The user's API token, shown once."""


class UserList(Message, frozen=True, tag="user-list.v1"):
    users: list[UserRecord]


class TeamCreate(Message, frozen=True, tag="team-create.v1"):
    name: str
    members: tuple[str, ...] = ()


class TeamMemberAdd(Message, frozen=True, tag="team-member-add.v1"):
    team: str
    user: str


class TeamList(Message, frozen=True, tag="team-list.v1"):
    teams: list[TeamRecord]


class Authorize(Message, frozen=True, tag="authorize.v1"):
    """May ``user`` do ``action`` (e.g. ``tenant.manage``) in ``project`` on an object owned by ``owner``?"""

    user: str
    action: str
    project: str = ""
    owner: str = ""


class Decision(Message, frozen=True, tag="decision.v1"):
    allowed: bool
    role: Role | None = None
    """The user's effective role in the project (None: not a member)."""
    reason: str = ""


class VisibleProjects(Message, frozen=True, tag="visible-projects.v1"):
    """Projects a user may see: every one when ``all``, else ``projects`` with the user's role."""

    all: bool = False
    projects: dict[str, Role] = msgspec.field(default_factory=dict)


class SessionsEnded(Message, frozen=True, tag="sessions-ended.v1"):
    """Sent on ``subjects.API_SESSIONS_ENDED`` by the API replica that revoked or rotated a token, deleted or
    disabled a user, or removed a team or a project: no replica may keep answering for what ended."""

    at: float = 0.0
    project: str = ""
    """The project whose access ended (a project removed), if only one project's did."""
    user: str = ""
    """The user whose access ended (a token, the user removed or disabled), if only one user's did. Neither:
    anything may have ended (a team removed); every open gateway stream is checked again."""


class MembershipChanged(Message, frozen=True, tag="membership-changed.v1"):
    """Published on ``tether.events.project.members``: lifecycle re-sends the project's RBAC."""

    project: str
    at: float


# --- lifecycle ---------------------------------------------------------------------------
class Member(msgspec.Struct, frozen=True, kw_only=True):
    """One RBAC subject of a tenant cluster or space: ``user:<name>`` or ``team:<name>``."""

    subject: str
    access: AccessLevel


class WorkloadSpec(msgspec.Struct, frozen=True, kw_only=True):
    """The desired state of one tenant cluster or space: what the agent makes true."""

    kind: WorkloadKind
    project: str
    name: str
    cluster: str
    state: DesiredState = "running"
    version: str = ""
    """Tenant clusters: the control plane's Kubernetes version."""
    resources: Resources = msgspec.field(default_factory=Resources)
    members: tuple[Member, ...] = ()
    quota: Quota = msgspec.field(default_factory=Quota)
    """The project's quota, enforced in the namespace (ResourceQuota)."""


class Observed(msgspec.Struct, frozen=True, kw_only=True):
    """What the agent last reported for the object."""

    generation: int
    state: DesiredState
    version: str = ""
    at: float = 0.0
    settled: bool = True
    """False while the cluster still gets there (see ``CommandResult.settled``)."""
    reason: str = ""
    message: str = ""


class Failure(msgspec.Struct, frozen=True, kw_only=True):
    generation: int
    reason: str
    message: str
    at: float


class Unseen(msgspec.Struct, frozen=True, kw_only=True):
    """An operation written before a record's own that its cluster has not seen yet."""

    op_id: str
    generation: int
    operation: Operation


class WorkloadRecord(Message, frozen=True, tag="workload-record.v1"):
    """Lifecycle KV ``desired_bucket(cluster)``, key ``<cluster>.<kind>.<project>.<name>`` (``desired_key``):
    desired and observed."""

    spec: WorkloadSpec
    generation: int
    """Bumped by every change of ``spec``; the agent applies a generation at most once."""
    op_id: str
    """Operation that produced this generation; the command's ``Nats-Msg-Id``."""
    operation: Operation
    created_by: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0
    sleep_after: float = 0.0
    """Seconds of inactivity before lifecycle puts a tenant to sleep (0: never)."""
    last_activity: float = 0.0
    observed: Observed | None = None
    failure: Failure | None = None
    conditions: tuple[Condition, ...] = ()
    phase: Phase = "Pending"
    """Kept by lifecycle on every write."""
    earlier: tuple[Unseen, ...] = ()
    """Operations written over before their cluster saw them, oldest first (at most lifecycle's
    ``MAX_EARLIER``): each ends when the cluster reports its generation (its result), or one above it
    (superseded by that operation: desired state is level-triggered, the cluster applied what was wanted
    later)."""


class WorkloadName(Message, frozen=True, tag="workload-name.v1"):
    """Lifecycle KV ``tether-workload-names``, key ``<kind>.<project>.<name>`` (``workload_key``): the cluster
    whose desired-state bucket holds the workload's record. Written compare-and-set when the name moves to a
    cluster (a create, a recreate elsewhere), so one name is live on one cluster only."""

    cluster: str
    at: float = 0.0
    """When it was written (the writer's clock): a name whose record never arrived is free again after
    ``store.NAME_LEASE`` seconds (its creator failed between the two writes)."""


class WorkloadCreate(Message, frozen=True, tag="workload-create.v1"):
    kind: WorkloadKind
    project: str
    name: str
    cluster: str = ""
    """Empty: placed by the platform."""
    version: str = ""
    sleep_after: float = 0.0
    resources: Resources | None = None
    created_by: str = ""
    cpu: float | None = None
    """Requested CPU; None: lifecycle's default for the kind (``resources`` wins when set)."""
    memory: int | None = None
    """Requested memory in bytes; None: lifecycle's default for the kind."""
    op_id: str = ""
    """The operation id the API chose (32 hex digits); empty: lifecycle picks one."""
    call: str = ""
    """The API call that asked for it (``POST /api/v1/...``): the command's audit record names it, and the
    API writes no second record for the call."""


class WorkloadRef(Message, frozen=True, tag="workload-ref.v1"):
    """One tenant cluster or space, by identity (``workload_key`` spells it as a string)."""

    kind: WorkloadKind
    project: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.project}/{self.name}"


class WorkloadAction(Message, frozen=True, tag="workload-action.v1"):
    kind: WorkloadKind
    project: str
    name: str
    action: Action
    version: str = ""
    by: str = ""
    op_id: str = ""
    """The operation id the API chose (32 hex digits); empty: lifecycle picks one."""
    call: str = ""
    """The API call that asked for it (``POST /api/v1/...``), named in the command's audit record."""
    owned_by: str = ""
    """Act only if the record was created by this user (a project user, who may manage only their own);
    empty: whoever created it (a platform or project admin). Checked by lifecycle on the record it writes
    over, so the API needs no read of the record first and no owner can change in between. Sent on
    ``Lifecycle.ACTION_OWN`` (which requires it), never on ``ACTION``."""


class WorkloadQuery(Message, frozen=True, tag="workload-query.v1"):
    kind: WorkloadKind
    projects: tuple[str, ...] = ()
    """Only these projects; empty with ``all``: every project."""
    all: bool = False
    cluster: str = ""


class WorkloadList(Message, frozen=True, tag="workload-list.v1"):
    items: list[WorkloadRecord]


class Command(Message, frozen=True, tag="command.v1"):
    """What a desired-state record not yet observed at its generation asks its agent (``agent.commands``):
    make ``spec`` true at ``generation``.

    Applying is idempotent: an object already at ``generation`` or later is left
    alone (and the result is reported again).
    """

    op_id: str
    generation: int
    spec: WorkloadSpec
    issued_at: float
    operation: str = ""


class CommandResult(Message, frozen=True, tag="command-result.v1"):
    """What an agent asks lifecycle to record (``subjects.Lifecycle.AGENT_RESULT``): the outcome of a
    command, or a later status of the workload it made."""

    op_id: Short
    cluster: AgentName
    kind: WorkloadKind
    project: AgentName
    name: AgentName
    generation: Generation
    ok: bool
    applied: bool = True
    """False when the generation was already applied (a redelivery): nothing was done again."""
    state: DesiredState = "running"
    version: Short = ""
    reason: Short = ""
    message: Text = ""
    at: Time = 0.0
    settled: bool = True
    """False while the cluster is still getting there (a tenant's control plane not Ready yet, a deleted
    namespace not gone yet); ``reason``/``message`` then say why. The agent reports again once it is."""
    earlier: Annotated[tuple[Generation, ...], Meta(max_length=MAX_EARLIER_RESULTS)] = ()
    """Earlier generations of the same object this agent applied (or failed) whose results lifecycle left out
    of the record (``ResultRecorded.later``: a newer generation was waiting for this cluster): their
    operations end with their own results, not as superseded."""


ResultOutcome = Literal["recorded", "already", "superseded", "unknown"]


class ResultRecorded(Message, frozen=True, tag="result-recorded.v1"):
    """Lifecycle's answer to a ``CommandResult``, sent once the record is durable (or needs nothing): the agent
    acknowledges its command on it. ``recorded``: written now; ``already``: recorded before (a repeat);
    ``superseded``: a newer generation is wanted (what the cluster is at was recorded if news); ``unknown``: no
    such object any more (deleted, forgotten, or an orphan's deletion)."""

    outcome: ResultOutcome
    detail: str = ""
    later: bool = False
    """With ``superseded``: nothing was written, because the record asks this cluster for a newer generation it
    has not reported yet. Folding this result in would write that record again, a copy of a command at a
    later position of the stream than the platform accepted it at (``services.lifecycle.recording``). The
    agent names this generation in the object's next result (``CommandResult.earlier``)."""


class InventoryItem(msgspec.Struct, frozen=True, kw_only=True):
    kind: WorkloadKind
    project: AgentName
    name: AgentName
    generation: Generation
    state: DesiredState
    version: Short = ""
    last_activity: Time = 0.0


class Inventory(Message, frozen=True, tag="inventory.v1"):
    """On ``tether.evt.<cluster>.inventory``: everything the platform owns on the cluster."""

    cluster: AgentName
    items: Annotated[tuple[InventoryItem, ...], Meta(max_length=MAX_OBJECTS)]
    at: Time
    reason: Literal["connect", "periodic", "requested"] = "periodic"


class WorkloadEvent(Message, frozen=True, tag="workload-event.v1"):
    """Published on ``tether.events.<kind>.<phase>`` (phase lower-case) and ``tether.events.command.failed``."""

    kind: WorkloadKind
    project: str
    name: str
    cluster: str
    phase: EventPhase
    at: float
    reason: str = ""
    message: str = ""


# --- outside event readers (issue 15) -----------------------------------------------------------
class EventsCredsRequest(Message, frozen=True, tag="events-creds-request.v1"):
    """Ask the registry for a subscribe-only NATS user for an outside consumer of the public events."""

    name: str
    ttl: float = 30 * 86400.0
    """Seconds the credentials are valid (the registry bounds it)."""


class EventsCreds(Message, frozen=True, tag="events-creds.v1"):
    """A ``.creds`` text allowed to read the public events and the EVENTS stream's messages, nothing else."""

    name: str
    creds: str
    inbox_prefix: str
    expires_at: float
