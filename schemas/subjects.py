"""Every subject, stream, consumer and bucket name. No subject literal lives elsewhere.

Layout:

- ``tether.cmd.<cluster>.<verb>``     commands to one agent (stream ``CMD``, work queue)
- ``tether.evt.<cluster>.<kind>``     results, status and inventory from one agent (stream ``EVT``)
- ``tether.hb.<cluster>``             heartbeats (core NATS, not persisted)
- ``tether.ctl.<cluster>``            control notices to one agent (core NATS: revoked)
- ``tether.events.<kind>``            public platform events for outside consumers
- ``tether.svc.<service>.<endpoint>`` request/reply endpoints (NATS micro services)
"""

from __future__ import annotations

from schemas.names import check_name

ROOT = "tether"

# --- streams and consumers -------------------------------------------------
CMD_STREAM = "CMD"
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


def _cluster(cluster: str) -> str:
    # A cluster name is a DNS-1123 label, so it can never inject a '.', '*' or '>'.
    return check_name(cluster, "cluster name")


# --- commands and agent events ----------------------------------------------------
def cmd(cluster: str, verb: str) -> str:
    return f"{ROOT}.cmd.{_cluster(cluster)}.{verb}"


def cmd_all(cluster: str) -> str:
    return f"{ROOT}.cmd.{_cluster(cluster)}.>"


CMD_ANY = f"{ROOT}.cmd.>"


def agent_consumer(cluster: str) -> str:
    return f"agent-{_cluster(cluster)}"


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


# --- public events ----------------------------------------------------------
def public_event(kind: str) -> str:
    """``kind`` is dotted, e.g. ``cluster.online``."""
    return f"{ROOT}.events.{kind}"


PUBLIC_EVENTS_ANY = f"{ROOT}.events.>"


# --- request/reply endpoints ------------------------------------------------------
def svc(service: str, endpoint: str) -> str:
    return f"{ROOT}.svc.{service}.{endpoint}"


class Registry:
    SERVICE = "registry"
    CLUSTER_CREATE = svc(SERVICE, "cluster.create")
    CLUSTER_GET = svc(SERVICE, "cluster.get")
    CLUSTER_LIST = svc(SERVICE, "cluster.list")
    CLUSTER_DISCONNECT = svc(SERVICE, "cluster.disconnect")
    CLUSTER_TOKEN = svc(SERVICE, "cluster.token")
    AGENT_BOOTSTRAP = svc(SERVICE, "agent.bootstrap")
    AGENT_HELLO = svc(SERVICE, "agent.hello")


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
