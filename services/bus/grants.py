"""What each platform service's NATS user may do: one ALLOW-list per service, derived from its code.

Issue 12: a service answers requests whose reply subject is the caller's choice, so its user must be able to
do no more than the service itself does. ``services.bus.identity`` makes the users: each is signed by a scoped
signing key of its service, whose template (in the account JWT) is that service's grant here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas import subjects

UNLIMITED = -1


@dataclass(frozen=True)
class ServiceGrant:
    """What one platform service's NATS user may publish and subscribe to; the broker denies everything else,
    whatever reply subject the service is handed."""

    pub: tuple[str, ...]
    sub: tuple[str, ...]
    pub_deny: tuple[str, ...] = ()
    """Carved out of ``pub`` (a consumer name is one token: no pattern says "only those I made")."""
    responses: bool = False
    """May also answer each request it receives once, wherever its reply subject points: the registry answers
    agents in their own inboxes (``_INBOX_<cluster>``), which no subject pattern can name (wildcards match
    whole tokens). ``ServiceHost`` checks every reply subject before answering: an agent call is answered only
    into the inbox of the cluster in its subject (tests/hostile/test_broker_reply.py).

    The broker does not narrow this: nats-server lets a responder with ``resp`` publish to any reply subject it
    was handed, even one its ``deny`` list names (tried on 2.15.1). Narrowing it in the broker means each agent
    in its own account importing its subjects (replies then routed by the server to the requester's account
    only); measured and left for later: ~45 KB of nats-server memory per cluster, +0.16 ms per call, and the
    JetStream consumer look-up does not work through an import (see the issue-12 closing note)."""


REPLIES = "_INBOX.>"
"""Platform callers' inboxes: each service's own requests and JetStream's answers come here (subscribe),
and it answers platform callers here (publish)."""
STREAM_INFO = "$JS.API.STREAM.INFO.*"
"""Reading a stream's config and state (changes nothing)."""
PLATFORM_STREAMS = (subjects.EVENTS_STREAM, subjects.AUDIT_STREAM, subjects.EVT_STREAM)
"""Declared by every service at start (``ensure_platform_streams``)."""


def _declares(*streams: str) -> tuple[str, ...]:
    """Create a stream and bring its config up to date; never delete nor purge it."""
    return tuple(f"$JS.API.STREAM.{op}.{stream}" for stream in streams for op in ("CREATE", "UPDATE"))


def _owns_bucket(bucket: str, *, named_consumers: bool = True) -> tuple[str, ...]:
    """Declare a KV bucket, write its keys, read them (direct and leader gets, short-lived ordered consumers).

    ``named_consumers=False`` for a bucket whose stream carries others' durable consumers (the desired
    state: one per agent): the owner's ordered reads are created on the bare subject (their name is the
    server's), so it needs neither a named create (which names the consumer and its filter in the subject:
    it could re-filter an agent's) nor a delete (it would remove one)."""
    stream = f"KV_{bucket}"
    named = (f"$JS.API.CONSUMER.CREATE.{stream}.>", f"$JS.API.CONSUMER.DELETE.{stream}.*") if named_consumers else ()
    return (
        *_declares(stream),
        f"$KV.{bucket}.>",
        f"$JS.API.DIRECT.GET.{stream}.>",
        # The request form: the same reads, batched (the last entry of each key under a prefix).
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        *named,
        f"$JS.FC.{stream}.>",
    )


def _durable(stream: str, consumer: str) -> tuple[str, ...]:
    """Declare, read and fetch from one durable pull consumer, and ack its messages (``consume``)."""
    return (
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    )


def _reads(stream: str) -> tuple[str, ...]:
    """Read a stream's history with short-lived consumers of its own (``read_since``, the web UI's replay);
    ``_not_theirs`` keeps others' durable consumers on it out of reach."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
    )


DURABLES = {
    subjects.EVENTS_STREAM: (subjects.LIFECYCLE_MEMBERSHIP_CONSUMER,),
    subjects.EVT_STREAM: (subjects.LIFECYCLE_INVENTORY_CONSUMER,),
}
"""The platform's durable consumers on streams others read (their owner: ``_durable`` below)."""


def _not_theirs(stream: str) -> tuple[str, ...]:
    """Neither change, delete, read nor fetch from the durable consumers others keep on ``stream``."""
    return tuple(
        p
        for name in DURABLES.get(stream, ())
        for p in (
            f"$JS.API.CONSUMER.*.{stream}.{name}",
            f"$JS.API.CONSUMER.*.{stream}.{name}.>",
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{name}",
        )
    )


def _agent_consumers() -> tuple[str, ...]:
    """Make, check, list and remove agents' consumers of the desired state, each filtered on one cluster's
    records (``desired_records``: the filter is the last tokens of the create subject, so no wider one is
    allowed). The list finds an earlier version's consumers a page at a time (``sweep``)."""
    return tuple(
        p
        for bucket, stream in zip(subjects.DESIRED_BUCKETS, subjects.DESIRED_STREAMS, strict=True)
        for p in (
            f"$JS.API.CONSUMER.CREATE.{stream}.*.$KV.{bucket}.*.*.*.*",
            f"$JS.API.CONSUMER.INFO.{stream}.*",
            f"$JS.API.CONSUMER.LIST.{stream}",
            f"$JS.API.CONSUMER.DELETE.{stream}.*",
        )
    )


def _reads_retired_bucket(bucket: str) -> tuple[str, ...]:
    """Read every record of an earlier version's bucket (to move them), then delete it."""
    stream = f"KV_{bucket}"
    return (
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.FC.{stream}.>",
        f"$JS.API.STREAM.DELETE.{stream}",
    )


def _micro(service: str) -> tuple[str, ...]:
    """Serve one's own endpoints and the NATS micro discovery requests (``$SRV.PING`` and the like)."""
    return (f"{subjects.ROOT}.svc.{service}.>", "$SRV.>")


RETIRED_CMD = tuple(f"$JS.API.STREAM.DELETE.{name}" for name in subjects.RETIRED_CMD_STREAMS)
"""The only streams a service may delete: the command streams of earlier versions (lifecycle retires them)."""
RETIRED_RESULTS = f"$JS.API.CONSUMER.DELETE.{subjects.EVT_STREAM}.{subjects.RETIRED_RESULTS_CONSUMER}"
"""Lifecycle's consumer of results on EVT of earlier versions (results are requests now): lifecycle retires it."""
L, R, P, A, H = subjects.Lifecycle, subjects.Registry, subjects.Projects, subjects.Access, subjects.Health
API_CALLS = (
    *(R.CLUSTER_CREATE, R.CLUSTER_GET, R.CLUSTER_LIST, R.CLUSTER_DISCONNECT, R.CLUSTER_UPDATE, R.CLUSTER_REMOVE),
    *(R.EVENTS_CREDS, P.CREATE, P.GET, P.LIST, P.UPDATE, P.DELETE),
    *(L.CREATE, L.GET, L.LIST, L.ACTION, L.ACTION_OWN, L.FORGET_CLUSTER, H.PRESENCE_LIST, H.PRESENCE_GET),
    *(A.AUTHENTICATE, A.AUTHORIZE, A.VISIBLE, A.USER_CREATE, A.USER_LIST, A.USER_DELETE, A.USER_DISABLE),
    *(A.TEAM_CREATE, A.TEAM_LIST, A.TEAM_ADD_MEMBER, A.TEAM_REMOVE_MEMBER, A.TEAM_DELETE),
    *(A.MEMBER_SET, A.MEMBERS_GET, A.MEMBERS_DELETE, A.TOKEN_LIST, A.TOKEN_CREATE, A.TOKEN_REVOKE, A.TOKEN_ROTATE),
)
"""The endpoints the API calls (never the agents' ones)."""
SERVICE_GRANTS: dict[str, ServiceGrant] = {
    "registry": ServiceGrant(
        pub=(
            REPLIES,
            STREAM_INFO,
            *_declares(*PLATFORM_STREAMS, *subjects.DESIRED_STREAMS),
            *_agent_consumers(),
            *(
                p
                for b in (subjects.BUCKET_CLUSTERS, subjects.BUCKET_CLUSTER_UIDS, subjects.BUCKET_PROJECTS)
                for p in _owns_bucket(b)
            ),
            subjects.CONTROL_ANY,
            subjects.public_event("cluster.*"),
        ),
        sub=(REPLIES, *_micro("registry")),
        responses=True,
    ),
    "access": ServiceGrant(
        pub=(
            REPLIES,
            STREAM_INFO,
            *_declares(*PLATFORM_STREAMS),
            *(
                p
                for b in (subjects.BUCKET_USERS, subjects.BUCKET_TOKENS, subjects.BUCKET_TEAMS, subjects.BUCKET_MEMBERS)
                for p in _owns_bucket(b)
            ),
            subjects.MEMBERSHIP_CHANGED,
        ),
        sub=(REPLIES, *_micro("access")),
    ),
    "lifecycle": ServiceGrant(
        pub=(
            REPLIES,
            STREAM_INFO,
            *_declares(*PLATFORM_STREAMS),
            *RETIRED_CMD,
            RETIRED_RESULTS,
            *(p for b in subjects.DESIRED_BUCKETS for p in _owns_bucket(b, named_consumers=False)),
            *_owns_bucket(subjects.BUCKET_WORKLOAD_NAMES),
            *_reads_retired_bucket(subjects.RETIRED_DESIRED_BUCKET),
            *_durable(subjects.EVT_STREAM, subjects.LIFECYCLE_INVENTORY_CONSUMER),
            *_durable(subjects.EVENTS_STREAM, subjects.LIFECYCLE_MEMBERSHIP_CONSUMER),
            subjects.AUDIT_COMMAND_ANY,
            subjects.public_event("tenant.*"),
            subjects.public_event("space.*"),
            subjects.public_event("command.*"),
            subjects.MESSAGE_DROPPED,
            R.CLUSTER_GET,
            R.CLUSTER_LIST,
            P.GET,
            A.MEMBERS_GET,
            A.VISIBLE,
            H.PRESENCE_GET,
            H.PRESENCE_LIST,
        ),
        sub=(REPLIES, *_micro("lifecycle")),
        # Answers agents' results in their own inboxes (``_INBOX_<cluster>``), like the registry their hellos.
        responses=True,
    ),
    "health": ServiceGrant(
        pub=(
            REPLIES,
            STREAM_INFO,
            *_declares(*PLATFORM_STREAMS),
            *_owns_bucket(subjects.BUCKET_PRESENCE),
            subjects.public_event("cluster.*"),
        ),
        sub=(
            REPLIES,
            *_micro("health"),
            subjects.HEARTBEAT_ANY,
            subjects.public_event("cluster.disconnected"),
            subjects.public_event("cluster.removed"),
        ),
    ),
    "api": ServiceGrant(
        # No endpoints of its own: over NATS it answers only micro discovery (``serve`` registers every service).
        pub=(
            REPLIES,
            STREAM_INFO,
            *API_CALLS,
            "$SRV.PING.*",
            subjects.AUDIT_API,
            *_reads(subjects.AUDIT_STREAM),
            *_reads(subjects.EVENTS_STREAM),
            subjects.GATEWAY_REQUESTS_ANY,
            subjects.GATEWAY_CONTROL_ANY,
            subjects.API_SESSIONS_ENDED,
        ),
        sub=(
            REPLIES,
            "$SRV.>",
            subjects.PUBLIC_EVENTS_ANY,
            subjects.gateway_frames_for_api("*"),
            subjects.API_SESSIONS_ENDED,
        ),
        pub_deny=(*_not_theirs(subjects.AUDIT_STREAM), *_not_theirs(subjects.EVENTS_STREAM)),
    ),
}
"""Each platform service's NATS user: exactly what it publishes and subscribes to (derived from its code:
its endpoints and calls, its events, the JetStream API of its own streams, consumers and buckets). A new
subject a service uses goes here too, or the broker refuses it (tests/hostile/test_broker_service_users.py).
The permissions live in the account JWT, as the template of one scoped signing key per service: the user
JWT (sent in CONNECT, 4 KB at most) names none of them."""

SERVICE_BUCKETS: dict[str, tuple[str, ...]] = {
    service: tuple(p.split(".")[1] for p in grant.pub if p.startswith("$KV."))
    for service, grant in SERVICE_GRANTS.items()
}
"""The KV buckets each service writes (from ``SERVICE_GRANTS``); it may write no other."""

ALL_BUCKETS = tuple(b for owned in SERVICE_BUCKETS.values() for b in owned)


def service_scope(service: str, signing_pub: str) -> dict[str, Any]:
    """The account's scoped signing key for ``service``: users it signs get exactly ``SERVICE_GRANTS``."""
    grant = SERVICE_GRANTS[service]
    pub: dict[str, list[str]] = {"allow": list(grant.pub)}
    if grant.pub_deny:
        pub["deny"] = list(grant.pub_deny)
    template: dict[str, Any] = {
        "pub": pub,
        "sub": {"allow": list(grant.sub)},
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
    }
    if grant.responses:
        template["resp"] = {"max": 1, "ttl": RESPONSE_TTL_NS}
    return {
        "kind": "user_scope",
        "key": signing_pub,
        "role": f"tether-{service}",
        "template": template,
        "description": f"the {service} service's NATS users",
    }


RESPONSE_TTL_NS = 60 * 1_000_000_000
"""How long a service granted ``responses`` may take to answer a request (nanoseconds, the JWT's unit)."""
