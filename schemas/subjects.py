"""Every subject, stream, consumer and bucket name. No subject literal lives elsewhere.

Layout:

- ``$KV.tether-desired-NN.<cluster>.<kind>.<project>.<name>`` the desired state, which is each agent's commands,
  in one of 16 buckets chosen by the cluster (``desired_bucket``; stream ``KV_tether-desired-NN``; one durable
  consumer per agent filtered on its cluster: ``desired_records``); ``tether-workload-names`` says on which
  cluster each workload name lives (``BUCKET_WORKLOAD_NAMES``)
- ``tether.evt.<cluster>.<kind>``     inventories from one agent (stream ``EVT``); results are requests to lifecycle
  (``agent_call(Lifecycle.AGENT_RESULT, <cluster>)``), recorded in the desired state, not stored twice
- ``tether.hb.<cluster>``             heartbeats (core NATS, not persisted)
- ``tether.ctl.<cluster>``            control notices to one agent (core NATS: revoked)
- ``tether.events.<kind>``            public platform events for outside consumers
- ``tether.svc.<service>.<endpoint>`` request/reply endpoints (NATS micro services)
- ``tether.gw.<cluster>.req|ctl``    the Kubernetes gateway's requests to one agent (``schemas.gateway``)
- ``tether.gwr.<cluster>.<api>.<n>``  one agent's answer frames for one gateway stream
"""

from __future__ import annotations

import zlib

from schemas.names import check_name

ROOT = "tether"

# --- streams and consumers -------------------------------------------------
RETIRED_CMD_STREAMS = ("CMD", *(f"CMD_{i:02d}" for i in range(16)))
"""The command streams of earlier versions (a single ``CMD``, then 16 work-queue shards ``CMD_00``..``CMD_15``):
each command was a copy of the desired state, which agents now follow themselves (``desired_records``).
Lifecycle deletes them at start; what they held is still in the desired state."""
EVT_STREAM = "EVT"
EVENTS_STREAM = "EVENTS"
AUDIT_STREAM = "AUDIT"

# --- KV buckets ---------------------------------------------------------------
BUCKET_CLUSTERS = "tether-clusters"
"""Registry: one cluster record per key (cluster name)."""
BUCKET_CLUSTER_UIDS = "tether-cluster-uids"
"""Registry: physical cluster UID -> name; the duplicate guard (create-only keys)."""
BUCKET_PRESENCE = "tether-presence"
"""Health: presence per cluster (platform clock)."""
BUCKET_USERS = "tether-users"
"""Access: users, their roles and token hashes."""
BUCKET_TOKENS = "tether-tokens"
"""Access: API token hash -> user name."""
BUCKET_TEAMS = "tether-teams"
"""Access: teams and their members."""
BUCKET_MEMBERS = "tether-members"
"""Access: project -> membership (users and teams with roles)."""
BUCKET_PROJECTS = "tether-projects"
"""Registry: projects (allowed clusters, selector, quota)."""
RETIRED_DESIRED_BUCKET = "tether-desired"
"""The single desired-state bucket of earlier versions: lifecycle moves its records into the shards
(``desired_bucket``) and the names' bucket at start, then deletes it."""
DESIRED_SHARDS = 16
"""The desired state is spread over this many buckets, each cluster's records in one (``desired_bucket``).

Why: each agent's consumer finds its next record by walking its stream from its last delivery (nats-server
2.15), so in one bucket a command cost as many record copies as the whole fleet wrote since that cluster's
previous one. Over 16 buckets the walk is a sixteenth: in the benchmark's same-writes baseline, 1,000 agents:
+32 % commands/s and 2.10 -> 1.52 ms of nats-server CPU a command; 10,000: +35 %, 3.14 -> 2.24 ms.
Changing the number moves clusters between buckets: it needs a migration like the one from
``RETIRED_DESIRED_BUCKET``."""
DESIRED_BUCKETS = tuple(f"tether-desired-{i:02d}" for i in range(DESIRED_SHARDS))
"""Lifecycle: desired and observed state of every tenant cluster and space, with revisions, by cluster."""
BUCKET_WORKLOAD_NAMES = "tether-workload-names"
"""Lifecycle: workload key (``<kind>.<project>.<name>``) -> the cluster its record lives on: one name, one
cluster, across the desired-state buckets (a create is a compare-and-set here)."""

# --- agent command verbs and event kinds ---------------------------------------------
EVT_INVENTORY = "inventory"
RETIRED_RESULTS_CONSUMER = "lifecycle-results"
"""Lifecycle's consumer of agents' results on EVT in earlier versions (results are requests now:
``Lifecycle.AGENT_RESULT``); lifecycle deletes it at start."""
LIFECYCLE_INVENTORY_CONSUMER = "lifecycle-inventory"
LIFECYCLE_MEMBERSHIP_CONSUMER = "lifecycle-membership"


def evt_kind(kind: str) -> str:
    """Filter for one kind of agent event across clusters."""
    return f"{ROOT}.evt.*.{kind}"


def cluster_of_evt(subject: str) -> str | None:
    parts = subject.split(".")
    if len(parts) != 4 or parts[0] != ROOT or parts[1] != "evt":
        return None
    return parts[2]


def _cluster(cluster: str) -> str:
    # A cluster name is a DNS-1123 label, so it can never inject a '.', '*' or '>'.
    return check_name(cluster, "cluster name")


# --- each agent's view of the desired state, and agent events ------------------------------
DESIRED_STREAMS = tuple(f"KV_{b}" for b in DESIRED_BUCKETS)
"""The streams of the desired-state buckets: agents' consumers read them."""


def desired_shard(cluster: str) -> int:
    """Which of the ``DESIRED_BUCKETS`` holds ``cluster``'s records: a checksum of the name (the same in every
    process and version, unlike ``hash``)."""
    return zlib.crc32(_cluster(cluster).encode()) % DESIRED_SHARDS


def desired_bucket(cluster: str) -> str:
    return DESIRED_BUCKETS[desired_shard(cluster)]


def desired_stream(cluster: str) -> str:
    """The stream of ``cluster``'s desired-state bucket, where its agent's consumer lives."""
    return DESIRED_STREAMS[desired_shard(cluster)]


def desired_prefix(cluster: str) -> str:
    """Subjects of ``cluster``'s desired-state records: ``desired_prefix(c) + desired_key(c, k)``."""
    return f"$KV.{desired_bucket(cluster)}."


def desired_records(cluster: str) -> str:
    """Filter for one cluster's desired-state records (exactly four tokens after the bucket: no other key form)."""
    return f"{desired_prefix(cluster)}{_cluster(cluster)}.*.*.*"


AGENT_CONSUMER_PREFIX = "agent-"
"""Every agent's consumer is named this and its cluster (``agent_consumer``)."""


def agent_consumer(cluster: str) -> str:
    return f"{AGENT_CONSUMER_PREFIX}{_cluster(cluster)}"


def evt(cluster: str, kind: str) -> str:
    return f"{ROOT}.evt.{_cluster(cluster)}.{kind}"


EVT_ANY = f"{ROOT}.evt.>"


def heartbeat(cluster: str) -> str:
    return f"{ROOT}.hb.{_cluster(cluster)}"


HEARTBEAT_ANY = f"{ROOT}.hb.*"


def cluster_of_heartbeat(subject: str) -> str | None:
    """The cluster a heartbeat subject belongs to, or None if it is not one."""
    parts = subject.split(".")
    if len(parts) != 3 or parts[0] != ROOT or parts[1] != "hb":
        return None
    return parts[2]


def control(cluster: str) -> str:
    return f"{ROOT}.ctl.{_cluster(cluster)}"


# --- the Kubernetes gateway (schemas.gateway) ------------------------------------------------------
def gateway_requests(cluster: str) -> str:
    """The API's new streams for one cluster's agent."""
    return f"{ROOT}.gw.{_cluster(cluster)}.req"


def gateway_control(cluster: str) -> str:
    """The API's credits and cancels for one cluster's agent's streams."""
    return f"{ROOT}.gw.{_cluster(cluster)}.ctl"


def gateway_agent_inbound(cluster: str) -> str:
    """What one cluster's agent subscribes to (and no other agent may)."""
    return f"{ROOT}.gw.{_cluster(cluster)}.>"


def gateway_frames(cluster: str, stream: str) -> str:
    """Where one stream's answer goes: ``stream`` is ``<api>.<n>`` (``schemas.gateway.check_stream_id``)."""
    return f"{ROOT}.gwr.{_cluster(cluster)}.{stream}"


def gateway_agent_outbound(cluster: str) -> str:
    """What one cluster's agent may publish its answers on (and no other agent may)."""
    return f"{ROOT}.gwr.{_cluster(cluster)}.>"


def gateway_frames_for_api(api: str) -> str:
    """What one API process subscribes to: the answers to its own streams, from every cluster."""
    return f"{ROOT}.gwr.*.{api}.*"


def parse_gateway_frames(subject: str) -> tuple[str, str] | None:
    """(cluster, stream) of a frames subject, or None if it is not one."""
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != ROOT or parts[1] != "gwr":
        return None
    return parts[2], f"{parts[3]}.{parts[4]}"


# --- the API's replicas among themselves --------------------------------------------
API_SESSIONS_ENDED = f"{ROOT}.api.sessions.ended"
"""An API replica ended sessions (``SessionsEnded``): every replica forgets the sessions and decisions it keeps.
Not stored: a notice lost on its way leaves another replica's copies to expire (``Platform.auth_cache_ttl``)."""


# --- audit -----------------------------------------------------------------------------
AUDIT_API = f"{ROOT}.audit.api"
AUDIT_ANY = f"{ROOT}.audit.>"


def audit_command(cluster: str) -> str:
    return f"{ROOT}.audit.cmd.{_cluster(cluster)}"


# --- public events ----------------------------------------------------------
def public_event(kind: str) -> str:
    """``kind`` is dotted, e.g. ``cluster.online``."""
    return f"{ROOT}.events.{kind}"


PUBLIC_EVENTS_ANY = f"{ROOT}.events.>"
MESSAGE_DROPPED = public_event("message.dropped")
"""A service terminated a message that kept failing (``MessageDropped``)."""


# --- request/reply endpoints ------------------------------------------------------
def svc(service: str, endpoint: str) -> str:
    return f"{ROOT}.svc.{service}.{endpoint}"


class Registry:
    SERVICE = "registry"
    CLUSTER_CREATE = svc(SERVICE, "cluster.create")
    CLUSTER_GET = svc(SERVICE, "cluster.get")
    CLUSTER_LIST = svc(SERVICE, "cluster.list")
    CLUSTER_DISCONNECT = svc(SERVICE, "cluster.disconnect")
    CLUSTER_UPDATE = svc(SERVICE, "cluster.update")
    CLUSTER_REMOVE = svc(SERVICE, "cluster.remove")
    EVENTS_CREDS = svc(SERVICE, "events.creds")
    AGENT_BOOTSTRAP = svc(SERVICE, "agent.bootstrap")
    AGENT_HELLO = svc(SERVICE, "agent.hello")
    AGENT_RENEW = svc(SERVICE, "agent.renew")
    """The three above are bases: an agent calls them as ``agent_call(base, cluster)``."""


def agent_call(endpoint: str, cluster: str) -> str:
    """The subject one cluster's agent calls ``endpoint`` (one of ``Registry.AGENT_*``, ``Lifecycle.AGENT_*``) on:
    ``<endpoint>.<cluster>``. The agent's JWT allows only its own, so the cluster in the subject is the one
    the broker authenticated: the service takes the caller's identity from it and answers only into that
    cluster's inbox."""
    return f"{endpoint}.{_cluster(cluster)}"


def agent_calls(endpoint: str) -> str:
    """What a service serves for ``agent_call``: every cluster's."""
    return f"{endpoint}.*"


def cluster_of_agent_call(endpoint: str, subject: str) -> str | None:
    """The cluster of an ``agent_call`` subject of ``endpoint``, or None if it is not one."""
    prefix = f"{endpoint}."
    if not subject.startswith(prefix):
        return None
    tail = subject[len(prefix) :]
    return tail if tail and "." not in tail else None


class Lifecycle:
    SERVICE = "lifecycle"
    CREATE = svc(SERVICE, "workload.create")
    GET = svc(SERVICE, "workload.get")
    LIST = svc(SERVICE, "workload.list")
    ACTION = svc(SERVICE, "workload.action")
    ACTION_OWN = svc(SERVICE, "workload.action.own")
    """A project user's action, on their own records only (``WorkloadAction.owned_by``, required here). A subject
    of its own so that a lifecycle from before the owner check, which would ignore the field, has no responder
    for it: the call fails (503) rather than acting on someone else's record while the services are upgraded."""
    FORGET_CLUSTER = svc(SERVICE, "cluster.forget")
    AGENT_RESULT = svc(SERVICE, "agent.result")
    """A base (``agent_call``): an agent asks lifecycle to record a result (``CommandResult``) in the desired
    state, and acks its command only once answered (``ResultRecorded``)."""


class Projects:
    SERVICE = "registry"
    CREATE = svc(SERVICE, "project.create")
    GET = svc(SERVICE, "project.get")
    LIST = svc(SERVICE, "project.list")
    UPDATE = svc(SERVICE, "project.update")
    DELETE = svc(SERVICE, "project.delete")


class Health:
    SERVICE = "health"
    PRESENCE_LIST = svc(SERVICE, "presence.list")
    PRESENCE_GET = svc(SERVICE, "presence.get")


class Access:
    SERVICE = "access"
    AUTHENTICATE = svc(SERVICE, "authenticate")
    USER_CREATE = svc(SERVICE, "user.create")
    USER_LIST = svc(SERVICE, "user.list")
    BOOTSTRAP_ADMIN = svc(SERVICE, "admin.bootstrap")
    AUTHORIZE = svc(SERVICE, "authorize")
    VISIBLE = svc(SERVICE, "visible")
    TEAM_CREATE = svc(SERVICE, "team.create")
    TEAM_ADD_MEMBER = svc(SERVICE, "team.add-member")
    TEAM_LIST = svc(SERVICE, "team.list")
    MEMBER_SET = svc(SERVICE, "member.set")
    MEMBERS_GET = svc(SERVICE, "member.get")
    MEMBERS_DELETE = svc(SERVICE, "member.delete")
    USER_DELETE = svc(SERVICE, "user.delete")
    USER_DISABLE = svc(SERVICE, "user.disable")
    TOKEN_LIST = svc(SERVICE, "token.list")
    TOKEN_CREATE = svc(SERVICE, "token.create")
    TOKEN_REVOKE = svc(SERVICE, "token.revoke")
    TOKEN_ROTATE = svc(SERVICE, "token.rotate")
    TEAM_REMOVE_MEMBER = svc(SERVICE, "team.remove-member")
    TEAM_DELETE = svc(SERVICE, "team.delete")


MEMBERSHIP_CHANGED = public_event("project.members")


# --- wildcards for the platform services' NATS permissions (services.bus.identity.SERVICE_GRANTS) ------------
CONTROL_ANY = f"{ROOT}.ctl.*"
AUDIT_COMMAND_ANY = f"{ROOT}.audit.cmd.*"
GATEWAY_REQUESTS_ANY = f"{ROOT}.gw.*.req"
GATEWAY_CONTROL_ANY = f"{ROOT}.gw.*.ctl"
