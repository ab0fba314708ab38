"""Least privilege for the platform's own services: each connects as its own NATS user whose permissions are an
ALLOW-list (``services.bus.grants.SERVICE_GRANTS``), so whatever reply subject it is handed, or whatever goes
wrong in it, the broker lets it publish and subscribe to nothing but what it really uses.

Per service, with its real ``svc-<service>.creds`` against a real platform: every subject of a wide corpus (every
stream's and bucket's delete and purge, every bucket's writes, every endpoint the agents' included, agents'
subjects, commands, audit, events, the system account) that its allow-list does not cover is refused by the
broker, the corpus's dangerous part is never covered, and the endpoints each service calls are exactly those
its code calls (``CALLS``, from its code)."""

from __future__ import annotations

import base64
import json
import re

import nats
import pytest

from schemas import subjects
from schemas.credentials import read_creds
from services.bus import grants, identity
from services.bus.memory_parts import matches
from tests.harness import wait_for
from tests.hostile.conftest import OTHER_BUCKET, SAME_BUCKET, Hostile

A, H, L, P, R = subjects.Access, subjects.Health, subjects.Lifecycle, subjects.Projects, subjects.Registry
AGENT_ENDPOINTS = (R.AGENT_BOOTSTRAP, R.AGENT_HELLO, R.AGENT_RENEW, L.AGENT_RESULT)


def _endpoints() -> set[str]:
    found = set()
    for cls in (A, H, L, P, R):
        for name, value in vars(cls).items():
            if name.isupper() and isinstance(value, str) and value.startswith(f"{subjects.ROOT}.svc."):
                found.add(value)
    return found - set(AGENT_ENDPOINTS)


ENDPOINTS = _endpoints()
CALLS: dict[str, set[str]] = {
    "registry": set(),
    "access": set(),
    "lifecycle": {R.CLUSTER_GET, R.CLUSTER_LIST, P.GET, A.MEMBERS_GET, A.VISIBLE, H.PRESENCE_GET, H.PRESENCE_LIST},
    "health": set(),
    # Every endpoint but the registry's agent ones (and access's admin.bootstrap, which nothing serves).
    "api": ENDPOINTS - {A.BOOTSTRAP_ADMIN},
}
"""The endpoints each service calls (grep its code for ``call(``)."""


def allowed(patterns: tuple[str, ...], subject: str, deny: tuple[str, ...] = ()) -> bool:
    return any(matches(p, subject) for p in patterns) and not any(matches(p, subject) for p in deny)


def publishes(service: str, subject: str) -> bool:
    grant = grants.SERVICE_GRANTS[service]
    return allowed(grant.pub, subject, grant.pub_deny)


def dangerous(victim: str) -> list[str]:
    """What no service may ever publish: destroying streams and buckets, forging agents' traffic, the system
    account, an agent's inbox."""
    kv = [f"KV_{b}" for b in grants.ALL_BUCKETS]
    # (Lifecycle may delete the retired command streams, results consumer and desired-state bucket of earlier
    # versions: not in this list. It may only read and delete that bucket, never purge nor write it: what it
    # holds is moved into the desired state at start.)
    retired = f"KV_{subjects.RETIRED_DESIRED_BUCKET}"
    streams = [subjects.AUDIT_STREAM, subjects.EVENTS_STREAM, subjects.EVT_STREAM, *kv]
    desired, consumer = subjects.desired_stream(victim), subjects.agent_consumer(victim)
    # Another bucket's stream than the victim's (each carries the consumers of its own clusters' agents).
    other = subjects.desired_stream(OTHER_BUCKET)
    assert other != desired
    return [
        *(f"$JS.API.STREAM.DELETE.{s}" for s in streams),
        *(f"$JS.API.STREAM.PURGE.{s}" for s in (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM, subjects.EVT_STREAM)),
        *(f"$JS.API.STREAM.PURGE.{s}" for s in (*kv, retired)),
        *(f"$JS.API.STREAM.MSG.DELETE.{s}" for s in (*streams, retired)),
        f"$KV.{subjects.RETIRED_DESIRED_BUCKET}.{victim}.space.p1.forged",
        "$JS.API.STREAM.CREATE.FORGED",
        *(
            p
            for stream, bucket in (
                (desired, subjects.desired_bucket(victim)),
                (other, subjects.desired_bucket(OTHER_BUCKET)),
            )
            for p in (
                f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
                # Named with no filter in the subject: the request body's filter (or several) would then be anyone's.
                f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}",
                # The victim's consumer re-filtered wider than one cluster (the filter is the create subject's tail).
                f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}.$KV.{bucket}.>",
            )
        ),
        # A consumer on one bucket's stream filtered on another bucket's records (the victim's).
        f"$JS.API.CONSUMER.CREATE.{other}.{consumer}.{subjects.desired_records(victim)}",
        *(f"$JS.API.CONSUMER.DELETE.{stream}.{name}" for stream, names in grants.DURABLES.items() for name in names),
        subjects.heartbeat(victim),
        subjects.evt(victim, subjects.EVT_INVENTORY),
        subjects.gateway_frames(victim, "api.1"),
        *(subjects.agent_call(e, victim) for e in AGENT_ENDPOINTS),
        "$SYS.REQ.CLAIMS.UPDATE",
        "$SYS.REQ.SERVER.PING",
        "$SYS.REQ.ACCOUNT.PING.CONNZ",
        f"_INBOX_{victim}.x",
        f"{subjects.ROOT}.anything",
    ]


def agent_consumer_changes(victim: str) -> list[str]:
    """Creating (here: re-filtering onto the records of an attacker in the victim's bucket, the only other
    records its stream holds) or deleting the victim agent's consumer."""
    desired, consumer = subjects.desired_stream(victim), subjects.agent_consumer(victim)
    assert subjects.desired_stream(SAME_BUCKET) == desired
    return [
        f"$JS.API.CONSUMER.CREATE.{desired}.{consumer}.{subjects.desired_records(SAME_BUCKET)}",
        f"$JS.API.CONSUMER.DELETE.{desired}.{consumer}",
    ]


def corpus(victim: str) -> list[str]:
    """Dangerous subjects, every bucket's writes and config, every endpoint, and the platform's own traffic."""
    return [
        *dangerous(victim),
        *(f"$KV.{b}.forged" for b in grants.ALL_BUCKETS),
        *(f"$JS.API.STREAM.UPDATE.KV_{b}" for b in grants.ALL_BUCKETS),
        *(f"$JS.API.STREAM.UPDATE.{s}" for s in (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM)),
        *sorted(ENDPOINTS),
        # Lifecycle's durable consumers on streams others read (only lifecycle may use them).
        *(
            f"$JS.API.CONSUMER.{op}.{stream}.{name}"
            for stream, names in grants.DURABLES.items()
            for name in names
            for op in ("CREATE", "DURABLE.CREATE", "INFO", "MSG.NEXT")
        ),
        f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.{subjects.LIFECYCLE_MEMBERSHIP_CONSUMER}.{subjects.ROOT}.>",
        f"{subjects.desired_prefix(victim)}{victim}.space.p1.forged",
        # Agents' consumers of the desired state: only the registry makes (one cluster's filter) and removes them.
        *agent_consumer_changes(victim),
        subjects.control(victim),
        subjects.audit_command(victim),
        subjects.AUDIT_API,
        subjects.gateway_requests(victim),
        subjects.gateway_control(victim),
        subjects.public_event("cluster.online"),
        subjects.public_event("tenant.ready"),
        subjects.MEMBERSHIP_CHANGED,
        subjects.MESSAGE_DROPPED,
        "_INBOX.x",
    ]


def subscriptions(victim: str) -> list[str]:
    return [
        ">",
        f"{subjects.desired_prefix(victim)}>",
        subjects.EVT_ANY,
        subjects.HEARTBEAT_ANY,
        subjects.gateway_agent_inbound(victim),
        f"_INBOX_{victim}.>",
        "$SYS.>",
        "$JS.API.>",
        *(subjects.svc(s, ">") for s in ("registry", "access", "lifecycle", "health")),
    ]


@pytest.mark.parametrize("service", ["registry", "access", "lifecycle", "health", "api"])
def test_each_service_calls_exactly_the_endpoints_its_code_calls(service: str) -> None:
    callable_ = {e for e in ENDPOINTS if publishes(service, e)}
    assert callable_ == CALLS[service]
    assert not [s for s in dangerous("victim") if publishes(service, s)], "an allow-list covers a dangerous subject"
    for bucket in grants.ALL_BUCKETS:
        owned = bucket in grants.SERVICE_BUCKETS[service]
        assert publishes(service, f"$KV.{bucket}.x") == owned, bucket


@pytest.mark.parametrize("service", ["registry", "access", "lifecycle", "health", "api"])
def test_only_the_registry_may_create_or_remove_an_agents_consumer(service: str) -> None:
    # Lifecycle owns the desired state's buckets, yet its reads are ordered consumers created on the bare
    # subject: it may neither name a consumer (and its filter) in a create nor delete one.
    for subject in agent_consumer_changes("victim"):
        assert publishes(service, subject) == (service == "registry"), (service, subject)


def _a_cluster_per_bucket() -> dict[str, str]:
    """One cluster name for each desired-state bucket (bucket -> cluster)."""
    found: dict[str, str] = {}
    i = 0
    while len(found) < subjects.DESIRED_SHARDS:
        found.setdefault(subjects.desired_bucket(f"c{i}"), f"c{i}")
        i += 1
    return found


@pytest.mark.parametrize("service", ["registry", "access", "lifecycle", "health", "api"])
def test_agents_consumers_on_every_desired_stream(service: str) -> None:
    """Each desired-state bucket's stream carries the consumers of its clusters' agents: on every one, only the
    registry makes one (filtered on one cluster's records of that very bucket), looks it up, lists them and
    removes one; no service makes one with a wider filter, another bucket's records, no filter in the subject,
    or the durable form."""
    registry = service == "registry"
    clusters = _a_cluster_per_bucket()
    for bucket, cluster in clusters.items():
        stream, consumer = subjects.desired_stream(cluster), subjects.agent_consumer(cluster)
        assert stream == f"KV_{bucket}"
        create = f"$JS.API.CONSUMER.CREATE.{stream}.{consumer}"
        assert publishes(service, f"{create}.{subjects.desired_records(cluster)}") == registry, (service, stream)
        assert publishes(service, f"$JS.API.CONSUMER.INFO.{stream}.{consumer}") == registry, (service, stream)
        assert publishes(service, f"$JS.API.CONSUMER.LIST.{stream}") == registry, (service, stream)
        assert publishes(service, f"$JS.API.CONSUMER.DELETE.{stream}.{consumer}") == registry, (service, stream)
        refused = [
            create,
            f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}",
            f"{create}.$KV.{bucket}.>",
            f"{create}.$KV.{bucket}.{cluster}.>",
            *(f"{create}.{subjects.desired_records(other)}" for other in clusters.values() if other != cluster),
        ]
        assert not [s for s in refused if publishes(service, s)], (service, stream)


@pytest.mark.parametrize("service", ["registry", "access", "lifecycle", "health", "api"])
async def test_a_services_own_user_is_refused_everything_outside_its_allow_list(hostile: Hostile, service: str) -> None:
    h = hostile
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    grant = grants.SERVICE_GRANTS[service]
    refused_pubs = [s for s in corpus(h.victim) if not publishes(service, s)]
    refused_subs = [s for s in subscriptions(h.victim) if not allowed(grant.sub, s)]
    # The corpus is wide enough to mean something: most of it is refused, the dangerous part always.
    assert set(dangerous(h.victim)) <= set(refused_pubs)
    assert len(refused_pubs) > 80, len(refused_pubs)
    creds = h.stack.auth / identity.service_creds_file(service)
    nc = await nats.connect(h.stack.nats_url, user_credentials=str(creds), error_cb=on_error)
    try:
        for subject in refused_pubs:
            before = len(errors)
            await nc.publish(subject, b"", reply="_INBOX.x")
            await nc.flush()
            await wait_for(lambda n=before: len(errors) > n, timeout=5, what=f"the broker to refuse {subject}")
            assert f'permissions violation for publish to "{subject.lower()}"' in errors[-1].lower(), errors[-1]
        for subject in refused_subs:
            before = len(errors)
            await nc.subscribe(subject)
            await nc.flush()
            await wait_for(lambda n=before: len(errors) > n, timeout=5, what=f"the broker to refuse sub {subject}")
            assert f'permissions violation for subscription to "{subject.lower()}"' in errors[-1].lower(), errors[-1]
    finally:
        await nc.close()
    await h.intact()
    await h.legit_command_applies()


def violations_of_service_users(h: Hostile) -> list[str]:
    """nats-server's log lines of permission violations by a service user (each one's user key is in its creds)."""
    keys = {}
    for service in grants.SERVICE_GRANTS:
        jwt, _seed = read_creds((h.stack.auth / identity.service_creds_file(service)).read_text())
        payload = jwt.split(".")[1]
        keys[json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"]] = service
    log = (h.stack.tmp / "nats" / "nats.log").read_text()
    return [f"{keys[k]}: {line}" for line in log.splitlines() if "Violation" in line for k in keys if k in line]


async def test_the_services_own_traffic_stays_within_their_allow_lists(hostile: Hostile) -> None:
    """The other side of the allow-lists: a platform doing a wide range of its work (the fixture's connects and
    applied space, then users, teams, tokens, projects, history reads, events credentials, a disconnect and a
    removal, and the registry's listing of the agents' consumers) makes no service hit its own allow-list."""
    h, s = hostile, hostile.stack
    bob = await s.user("bob")
    await s.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["bob"]})
    await s.ok("PUT", "/api/v1/projects/p1/members", json={"user": "bob", "role": "user"})
    await s.ok("POST", "/api/v1/projects/p1/spaces", token=bob, json={"name": "bobs", "cluster": h.victim})
    await s.wait_synced("space", "p1", "bobs", timeout=30)
    token = await s.ok("POST", "/api/v1/users/bob/tokens", json={"name": "ci"})
    await s.ok("DELETE", f"/api/v1/users/bob/tokens/{token['info']['id']}")
    for path in (
        "/api/v1/clusters",
        f"/api/v1/clusters/{h.victim}",
        "/api/v1/projects",
        "/api/v1/users",
        "/api/v1/teams",
        "/api/v1/audit",
        f"/api/v1/clusters/{h.victim}/events",
        "/api/v1/whoami",
    ):
        await s.ok("GET", path)
    await s.ok("POST", "/api/v1/events/credentials", json={"name": "watcher"})
    await s.ok("POST", f"/api/v1/clusters/{h.attacker}/disconnect")
    await s.ok("DELETE", f"/api/v1/clusters/{h.attacker}")
    await h.legit_command_applies()
    registry_log = h.stack.tmp / "logs" / "registry.log"
    await wait_for(
        lambda: re.search(r"agents' consumers listed \([0-9.]+s\): 0 of another config", registry_log.read_text()),
        timeout=30,
        what="the registry's sweep of the agents' consumers (the fixture runs it at once)",
    )
    assert violations_of_service_users(h) == []
