"""Pure rules of the registry: no I/O, no clock of its own (``now`` is passed in)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import secrets

import msgspec

from schemas.changes import ClusterUpdate, ProjectUpdate
from schemas.credentials import CONNECT_TOKEN_PREFIX, jwt_claims, parse_connect_token
from schemas.errors import Conflict, Forbidden, Gone, InvalidInput, NotFound, Unauthenticated
from schemas.messages import (
    AGENT_PROTOCOL,
    AgentBootstrap,
    AgentHello,
    AgentRenew,
    ClusterCreate,
    ClusterRecord,
    ProjectCreate,
    ProjectRecord,
    Quota,
)
from schemas.names import check_labels, check_name
from schemas.retrying import NOT_LISTENING_BACKOFF

CREDENTIAL_PREFIX = "tac"
MAX_TEXT = 1024
_UID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_USER_KEY = re.compile(r"^U[A-Z2-7]{55}$")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _matches(secret: str, digest: str) -> bool:
    return bool(digest) and hmac.compare_digest(hash_secret(secret), digest)


def make_secret(prefix: str, cluster: str) -> str:
    """``<prefix>.<cluster>.<random>``: the cluster name lets the registry find the record."""
    return f"{prefix}.{cluster}.{secrets.token_urlsafe(32)}"


def check_cluster_uid(uid: str) -> str:
    if not _UID.match(uid):
        raise InvalidInput(f"invalid cluster UID {uid!r}: expected 1-128 letters, digits, '-' or '_'")
    return uid


def validate_create(req: ClusterCreate) -> None:
    check_name(req.name, "cluster name")
    check_labels(req.labels)
    if len(req.display_name) > MAX_TEXT or len(req.description) > MAX_TEXT:
        raise InvalidInput(f"display name and description must be at most {MAX_TEXT} characters")
    if not 1 <= req.token_ttl <= 30 * 24 * 3600:
        raise InvalidInput("token_ttl must be between 1 second and 30 days")


def register(req: ClusterCreate, existing: ClusterRecord | None, now: float) -> tuple[ClusterRecord, str]:
    """A new (or reconnecting) cluster record and its one-time connect token.

    Connecting a name again is allowed while it is not connected (a lost token,
    or a cluster that was disconnected); a connected cluster is a conflict.
    """
    validate_create(req)
    if existing is not None and existing.state == "connected":
        raise Conflict(f"cluster {req.name!r} is already connected; disconnect it first to connect it again")
    if existing is not None and not req.rotate_token:
        raise Conflict(
            f"cluster {req.name!r} already exists ({existing.state}); connect it again with --rotate-token "
            "to issue a new connect token (the old one stops working)"
        )
    token = make_secret(CONNECT_TOKEN_PREFIX, req.name)
    record = ClusterRecord(
        name=req.name,
        display_name=req.display_name or (existing.display_name if existing else "") or req.name,
        description=req.description or (existing.description if existing else ""),
        labels=req.labels or (dict(existing.labels) if existing else {}),
        local=req.local,
        created_at=existing.created_at if existing else now,
        state="pending",
        token_hash=hash_secret(token),
        token_expires_at=now + req.token_ttl,
    )
    return record, token


MIN_CREDENTIAL_KEY = 32
"""Bytes of the registry's key that agents' credentials are derived with, at least."""


def agent_credential(key: bytes, cluster: str, token_hash: str, user_key: str) -> str:
    """The agent's credential (``tac.<cluster>.<43 characters>``): an HMAC, under the registry's own key, of the
    spent token's hash and the agent's NATS key. The same bootstrap asked again gives the same credential, so a
    retry whose first answer was lost is answered without a write; nobody without the key can compute it."""
    if len(key) < MIN_CREDENTIAL_KEY:
        raise ValueError(f"the credential key must have at least {MIN_CREDENTIAL_KEY} bytes")
    mac = hmac.new(key, f"{cluster}\n{token_hash}\n{user_key}".encode(), hashlib.sha256).digest()
    return f"{CREDENTIAL_PREFIX}.{cluster}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _full_token(req: AgentBootstrap) -> tuple[str, str]:
    cluster, secret, _jwt = parse_connect_token(req.token)
    return cluster, f"{CONNECT_TOKEN_PREFIX}.{cluster}.{secret}"


def redeem(record: ClusterRecord, req: AgentBootstrap, now: float, key: bytes) -> tuple[ClusterRecord, str]:
    """Spend the connect token; return the connected record and the agent's credential."""
    check_cluster_uid(req.cluster_uid)
    if record.state == "connected" or not record.token_hash:
        raise Gone(f"connect token for cluster {record.name!r} was already used")
    cluster, token = _full_token(req)
    if cluster != record.name or not _matches(token, record.token_hash):
        raise Unauthenticated(f"wrong connect token for cluster {record.name!r}")
    if now > record.token_expires_at:
        raise Gone(
            f"connect token for cluster {record.name!r} expired; run 'tether cluster connect {record.name}' again"
        )
    credential = agent_credential(key, record.name, record.token_hash, req.user_public_key)
    return (
        msgspec.structs.replace(
            record,
            state="connected",
            token_hash="",
            spent_token_hash=record.token_hash,
            cluster_uid=req.cluster_uid,
            credential_hash=hash_secret(credential),
            connected_at=now,
            agent_version=req.agent_version,
            kubernetes_version=req.kubernetes_version,
            driver=req.driver,
            nats_user=req.user_public_key,
        ),
        credential,
    )


def redeem_again(
    record: ClusterRecord, req: AgentBootstrap, now: float, key: bytes
) -> tuple[ClusterRecord | None, str]:
    """A retry of the bootstrap that spent the token: answered again (the same credential) only for the agent
    that spent it (the same NATS key and cluster UID) and only until the token's expiry; anyone else gets the
    refusal of a spent token. Returns the record to write (None: nothing, the usual case) and the credential."""
    check_cluster_uid(req.cluster_uid)
    _cluster, token = _full_token(req)
    same_agent = (
        record.state == "connected"
        and _matches(token, record.spent_token_hash)
        and bool(record.nats_user)
        and hmac.compare_digest(req.user_public_key, record.nats_user)
        and req.cluster_uid == record.cluster_uid
    )
    if not same_agent or now > record.token_expires_at:
        raise Gone(f"connect token for cluster {record.name!r} was already used")
    credential = agent_credential(key, record.name, record.spent_token_hash, record.nats_user)
    if _matches(credential, record.credential_hash):
        return None, credential
    # Derived with another key (an open NATS's registry restarted since; its key lives in memory only).
    return msgspec.structs.replace(record, credential_hash=hash_secret(credential)), credential


def check_caller(caller: str, claimed: str) -> None:
    """An agent speaks only for its own cluster: ``caller`` is the cluster the broker let publish the request
    (from its subject), ``claimed`` the one the message names."""
    if caller != claimed:
        raise Forbidden(f"the agent of cluster {caller!r} cannot speak for cluster {claimed!r}")


def check_user_key(key: str) -> str:
    if not _USER_KEY.match(key):
        raise InvalidInput("invalid NATS user public key: expected 56 characters starting with 'U'")
    return key


def check_renewal(record: ClusterRecord, req: AgentRenew) -> None:
    """Only a connected cluster's agent, with its credential, gets a fresh NATS identity."""
    if record.state == "disconnected":
        raise Unauthenticated(f"cluster {record.name!r} was disconnected from the platform")
    if record.state != "connected" or not _matches(req.credential, record.credential_hash):
        raise Unauthenticated(f"invalid agent credential for cluster {record.name!r}")


def revocations(records: list[ClusterRecord]) -> dict[str, int]:
    """NATS users to refuse: the agents of every disconnected cluster, as of their disconnection."""
    return {r.nats_user: int(r.disconnected_at) + 1 for r in records if r.state == "disconnected" and r.nats_user}


def same_account(held: str | None, wanted: str) -> bool:
    """Whether the account JWT the server holds says what ``wanted`` says: the same claims but for when each
    was issued (``iat``) and its id (``jti``, a hash over the claims and ``iat``). Pushing it again would change
    nothing, and costs nats-server seconds with thousands of the account's users connected."""
    if held is None:
        return False
    mine, theirs = jwt_claims(wanted), jwt_claims(held)
    if mine is None or theirs is None:
        return False
    ignored = ("iat", "jti")
    return {k: v for k, v in mine.items() if k not in ignored} == {k: v for k, v in theirs.items() if k not in ignored}


def check_protocol(hello: AgentHello) -> None:
    """Gone, saying to upgrade, for an agent that still takes its commands from a ``CMD_*`` stream: it would wait
    on a consumer that no longer exists. The agent stops with this message instead of waiting forever."""
    if hello.protocol < AGENT_PROTOCOL:
        version = f" {hello.agent_version}" if hello.agent_version else ""
        raise Gone(
            f"this agent{version} takes its commands from a CMD_* stream (agent protocol {hello.protocol}), which "
            f"this platform no longer has: it delivers them from the desired state (protocol {AGENT_PROTOCOL}); "
            f"upgrade the agent to this platform's version"
        )


UNHEARD_RATE = 1000.0
"""Requests a second a whole fleet may send, in all, while nobody answers them (``unheard_backoff``)."""


def unheard_backoff(clusters: int) -> float:
    """The longest wait between an agent's attempts while nobody listens, for a fleet of ``clusters``: the
    fleet's waits are uniform between half of it and all of it (``backoff_delay``), 3/4 of it on average, so
    the fleet asks ``UNHEARD_RATE`` times a second at most; never under the agents' own 2 s (a small fleet is
    back at once), never over 30 s."""
    return min(30.0, max(NOT_LISTENING_BACKOFF[1], clusters / (0.75 * UNHEARD_RATE)))


def admit(record: ClusterRecord, hello: AgentHello) -> ClusterRecord:
    """Check an agent's credential on (re)connect; return the record with its reported versions."""
    if record.state == "disconnected":
        raise Unauthenticated(f"cluster {record.name!r} was disconnected from the platform")
    if record.state != "connected" or not _matches(hello.credential, record.credential_hash):
        raise Unauthenticated(f"invalid agent credential for cluster {record.name!r}")
    if hello.cluster_uid != record.cluster_uid:
        raise Conflict(
            f"agent for {record.name!r} now runs on a different cluster "
            f"(UID {hello.cluster_uid}, registered {record.cluster_uid})"
        )
    check_protocol(hello)
    return msgspec.structs.replace(
        record,
        agent_version=hello.agent_version or record.agent_version,
        kubernetes_version=hello.kubernetes_version or record.kubernetes_version,
        driver=hello.driver or record.driver,
    )


def disconnect(record: ClusterRecord, now: float) -> ClusterRecord:
    if record.state == "disconnected":
        return record
    return msgspec.structs.replace(
        record, state="disconnected", credential_hash="", token_hash="", spent_token_hash="", disconnected_at=now
    )


def duplicate_error(uid: str, holder: str) -> Conflict:
    return Conflict(f"this cluster (UID {uid}) is already connected as {holder!r}")


def new_project(req: ProjectCreate, known_clusters: set[str], now: float) -> ProjectRecord:
    """A validated project record; every named cluster must be registered."""
    check_name(req.name, "project name")
    for cluster in req.clusters:
        check_name(cluster, "cluster name")
        if cluster not in known_clusters:
            raise NotFound(f"cluster {cluster!r} not found")
    check_labels(req.cluster_selector)
    q = req.quota
    for field_name in ("tenants", "spaces", "cpu", "memory"):
        value = getattr(q, field_name)
        if value is not None and value < 0:
            raise InvalidInput(f"quota {field_name} must not be negative")
    if len(req.display_name) > MAX_TEXT:
        raise InvalidInput(f"display name must be at most {MAX_TEXT} characters")
    return ProjectRecord(
        name=req.name,
        display_name=req.display_name or req.name,
        clusters=tuple(dict.fromkeys(req.clusters)),
        cluster_selector=dict(req.cluster_selector),
        quota=q,
        created_by=req.created_by,
        created_at=now,
    )


def _check_text(what: str, text: str) -> str:
    if len(text) > MAX_TEXT:
        raise InvalidInput(f"{what} must be at most {MAX_TEXT} characters")
    return text


def update_cluster(record: ClusterRecord, req: ClusterUpdate) -> ClusterRecord | None:
    """The record with the given fields changed, or None when nothing changes."""
    changes: dict[str, object] = {}
    if req.display_name is not None:
        changes["display_name"] = _check_text("display name", req.display_name) or record.name
    if req.description is not None:
        changes["description"] = _check_text("description", req.description)
    if req.labels is not None:
        changes["labels"] = dict(check_labels(req.labels))
    if all(getattr(record, k) == v for k, v in changes.items()):
        return None
    return msgspec.structs.replace(record, **changes)


def check_removable(record: ClusterRecord) -> None:
    if record.state == "connected":
        raise Conflict(
            f"cluster {record.name!r} is connected; disconnect it first ('tether cluster disconnect {record.name}')"
        )


def _check_quota(q: Quota) -> Quota:
    for field_name in ("tenants", "spaces", "cpu", "memory"):
        value = getattr(q, field_name)
        if value is not None and value < 0:
            raise InvalidInput(f"quota {field_name} must not be negative")
    return q


def update_project(record: ProjectRecord, req: ProjectUpdate, known_clusters: set[str]) -> ProjectRecord | None:
    """The project with the given fields changed, or None when nothing changes. Lowering a quota below what
    is in use is allowed: nothing running is touched, only new creates are refused."""
    changes: dict[str, object] = {}
    if req.display_name is not None:
        changes["display_name"] = _check_text("display name", req.display_name) or record.name
    if req.clusters is not None:
        for cluster in req.clusters:
            check_name(cluster, "cluster name")
            if cluster not in known_clusters:
                raise NotFound(f"cluster {cluster!r} not found")
        changes["clusters"] = tuple(dict.fromkeys(req.clusters))
    if req.cluster_selector is not None:
        changes["cluster_selector"] = dict(check_labels(req.cluster_selector))
    if req.quota is not None:
        changes["quota"] = _check_quota(req.quota)
    if req.deleting is not None:
        changes["deleting"] = req.deleting
    if all(getattr(record, k) == v for k, v in changes.items()):
        return None
    return msgspec.structs.replace(record, **changes)


EVENTS_CREDS_MAX_TTL = 366 * 86400.0
"""Outside readers' credentials cannot be revoked one by one (nothing records them): their life is bounded."""


def events_creds_ttl(ttl: float) -> float:
    """The lifetime of an outside events reader's credentials, checked: 1 minute to a year."""
    if not math.isfinite(ttl) or not 60 <= ttl <= EVENTS_CREDS_MAX_TTL:
        raise InvalidInput(f"events credentials ttl must be 60 s to {EVENTS_CREDS_MAX_TTL / 86400:g} days, got {ttl!r}")
    return ttl
