"""Messages that cross the bus: one frozen, versioned ``msgspec.Struct`` each.

Rules (as in Temporal's payloads): a message type is never changed
incompatibly. New fields get defaults, so an old reader ignores them and a new
reader of an old message fills them in. An incompatible change is a new type
with a new tag (``...v2``). Times are seconds since the epoch (float, UTC).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

import msgspec

from schemas.errors import InvalidInput


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


# --- shared pieces ---------------------------------------------------------------
class Condition(msgspec.Struct, frozen=True, kw_only=True):
    """A fact about an object, Kubernetes-style."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = ""
    message: str = ""
    last_transition_time: float = 0.0


class Capacity(msgspec.Struct, frozen=True, kw_only=True):
    cpu: float = 0.0
    """CPU cores (allocatable)."""
    memory: int = 0
    """Bytes (allocatable)."""


class ClusterHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What an agent reports about its cluster."""

    nodes_ready: int = 0
    nodes_total: int = 0
    capacity: Capacity = msgspec.field(default_factory=Capacity)
    kubernetes_version: str = ""
    agent_version: str = ""
    driver: str = ""
    api_reachable: bool = True
    """False when the agent runs but cannot reach its cluster's API server."""


# --- heartbeats ---------------------------------------------------------------------
class Heartbeat(Message, frozen=True, tag="heartbeat.v1"):
    cluster: str
    session: str
    """Random per agent process; a new one means the agent restarted."""
    seq: int
    sent_at: float
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
    cluster_uid: str = ""
    credential_hash: str = ""
    """SHA-256 of the agent's long-lived credential."""
    connected_at: float = 0.0
    disconnected_at: float = 0.0
    agent_version: str = ""
    kubernetes_version: str = ""
    driver: str = ""


class ClusterCreate(Message, frozen=True, tag="cluster-create.v1"):
    name: str
    display_name: str = ""
    description: str = ""
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    local: bool = False
    token_ttl: float = 3600.0


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

    token: str
    cluster_uid: str
    agent_version: str = ""
    kubernetes_version: str = ""
    driver: str = ""


class AgentCredentials(Message, frozen=True, tag="agent-credentials.v1"):
    cluster: str
    credential: str


class AgentHello(Message, frozen=True, tag="agent-hello.v1"):
    """Sent on every (re)connect; refused once the cluster is disconnected."""

    cluster: str
    credential: str
    cluster_uid: str
    agent_version: str = ""
    kubernetes_version: str = ""
    driver: str = ""


class AgentWelcome(Message, frozen=True, tag="agent-welcome.v1"):
    cluster: str
    heartbeat_interval: float


class ControlNotice(Message, frozen=True, tag="control-notice.v1"):
    """Core-NATS notice to one agent."""

    kind: Literal["revoked"]
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


class PresenceList(Message, frozen=True, tag="presence-list.v1"):
    items: list[Presence]


# --- access ---------------------------------------------------------------------------------
class UserRecord(Message, frozen=True, tag="user-record.v1"):
    name: str
    email: str = ""
    platform_admin: bool = False
    created_at: float = 0.0


class TokenRecord(Message, frozen=True, tag="token-record.v1"):
    user: str
    created_at: float = 0.0


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
class ClusterEvent(Message, frozen=True, tag="cluster-event.v1"):
    """Published on ``tether.events.cluster.<kind>``."""

    kind: Literal["registered", "connected", "online", "offline", "disconnected"]
    cluster: str
    at: float
    reason: str = ""


class ClusterUidClaim(Message, frozen=True, tag="cluster-uid-claim.v1"):
    """Registry's duplicate guard: a physical cluster UID belongs to one cluster name."""

    cluster: str
