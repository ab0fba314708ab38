"""NATS decentralized auth: operator, accounts and users as nkey-signed JWTs.

Promise 6 rests on this: every agent connects as its own NATS user whose JWT
allows exactly its own cluster's subjects, and the broker enforces it.

Layout (created once by ``tether up`` and kept in ``<data>/auth``):

- operator (+ an operator signing key, which signs the accounts);
- ``SYS``, the system account, with one user the registry uses to push
  account updates (revocations) to the server;
- ``TETHER``, the platform's account, with JetStream. Its signing key signs
  the short-lived bootstrap user baked into each connect token, each agent
  and ``platform.creds`` (unrestricted: operators' tools and tests). Each
  platform service's user is signed by a scoped signing key of its own, whose
  template is that service's allow-list (``SERVICE_GRANTS``).

Connecting a cluster needs no server reload: the server trusts the account,
and the account trusts its signing key. Disconnecting one revokes its user in
the account JWT, which the registry pushes to the server at once.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

from schemas import subjects
from schemas.credentials import agent_inbox_prefix, creds
from services.bus.grants import SERVICE_GRANTS, service_scope

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}
PREFIXES = {
    "operator": nkeys.PREFIX_BYTE_OPERATOR,
    "account": nkeys.PREFIX_BYTE_ACCOUNT,
    "user": nkeys.PREFIX_BYTE_USER,
}
UNLIMITED = -1


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_seed(kind: str, entropy: bytes | None = None) -> str:
    """A fresh nkey seed (``S...``) for an operator, account or user."""
    raw = entropy if entropy is not None else os.urandom(32)
    return nkeys.encode_seed(raw[:32], PREFIXES[kind]).decode()  # type: ignore[no-any-return]


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(seed.encode()).public_key.decode())


def encode_jwt(claims: dict[str, Any], signer_seed: str) -> str:
    """Sign ``claims`` (``iss`` set to the signer) the way nats-server verifies them."""
    kp = nkeys.from_seed(signer_seed.encode())
    body = dict(claims)
    body["iss"] = kp.public_key.decode()
    body.setdefault("iat", int(time.time()))
    body["jti"] = ""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()
    body["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = json.dumps(HEADER, separators=(",", ":"))
    payload = json.dumps(body, separators=(",", ":"))
    signing_input = f"{_b64(header.encode())}.{_b64(payload.encode())}"
    signature = kp.sign(signing_input.encode())
    return f"{signing_input}.{_b64(signature)}"


def operator_jwt(operator_seed: str, signing_pub: str, system_account: str) -> str:
    pub = public_key(operator_seed)
    return encode_jwt(
        {
            "sub": pub,
            "name": "tether",
            "nats": {"signing_keys": [signing_pub], "system_account": system_account, "type": "operator", "version": 2},
        },
        operator_seed,
    )


def account_jwt(
    account_pub: str,
    name: str,
    operator_signing_seed: str,
    *,
    signing_keys: list[str | dict[str, Any]],
    jetstream: bool,
    revocations: dict[str, int] | None = None,
) -> str:
    limits: dict[str, Any] = {
        "subs": UNLIMITED,
        "data": UNLIMITED,
        "payload": UNLIMITED,
        "imports": UNLIMITED,
        "exports": UNLIMITED,
        "wildcards": True,
        "conn": UNLIMITED,
        "leaf": UNLIMITED,
    }
    if jetstream:
        limits.update(
            {"mem_storage": UNLIMITED, "disk_storage": UNLIMITED, "streams": UNLIMITED, "consumer": UNLIMITED}
        )
    nats_claims: dict[str, Any] = {
        "limits": limits,
        "signing_keys": signing_keys,
        "default_permissions": {"pub": {}, "sub": {}},
        "type": "account",
        "version": 2,
    }
    if revocations:
        nats_claims["revocations"] = revocations
    return encode_jwt({"sub": account_pub, "name": name, "nats": nats_claims}, operator_signing_seed)


def user_jwt(
    user_pub: str,
    name: str,
    account_pub: str,
    signing_seed: str,
    *,
    pub_allow: list[str] | None = None,
    sub_allow: list[str] | None = None,
    expires: float | None = None,
    tags: list[str] | None = None,
    pub_deny: list[str] | None = None,
    sub_deny: list[str] | None = None,
    payload: int = UNLIMITED,
    subs: int = UNLIMITED,
    data: int = UNLIMITED,
) -> str:
    """A user of ``account_pub`` signed by its signing key; None permissions mean unrestricted.

    ``payload``, ``subs`` and ``data`` are the server-enforced limits of each connection of this user (largest
    message, subscriptions, bytes pending)."""
    pub: dict[str, list[str]] = {}
    sub: dict[str, list[str]] = {}
    if pub_allow is not None:
        pub["allow"] = pub_allow
    if pub_deny:
        pub["deny"] = pub_deny
    if sub_allow is not None:
        sub["allow"] = sub_allow
    if sub_deny:
        sub["deny"] = sub_deny
    nats_claims: dict[str, Any] = {
        "pub": pub,
        "sub": sub,
        "subs": subs,
        "data": data,
        "payload": payload,
        "issuer_account": account_pub,
        "type": "user",
        "version": 2,
    }
    if tags:
        nats_claims["tags"] = tags
    claims: dict[str, Any] = {"sub": user_pub, "name": name, "nats": nats_claims}
    if expires is not None:
        claims["exp"] = int(expires)
    return encode_jwt(claims, signing_seed)


def write_secret(path: Path, text: str) -> None:
    """Write atomically with mode 0600."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


# --- what an agent may do --------------------------------------------------------------------
def agent_permissions(cluster: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) allow-lists for one cluster's agent: its own subjects and nothing else."""
    consumer = subjects.agent_consumer(cluster)
    stream = subjects.desired_stream(cluster)
    publish = [
        subjects.heartbeat(cluster),
        # Only the event kind the platform reads: every other subject would be one more per-subject limit
        # (``EVT_MAX_PER_SUBJECT``) to fill the EVT stream with. Results are requests to lifecycle.
        subjects.evt(cluster, subjects.EVT_INVENTORY),
        subjects.agent_call(subjects.Registry.AGENT_HELLO, cluster),
        subjects.agent_call(subjects.Registry.AGENT_RENEW, cluster),
        subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, cluster),
        # The platform creates its consumer of the desired state (at bootstrap and hello): the agent may only
        # read and fetch from it and ack, never create, change or delete one (it cannot re-filter it onto
        # another cluster's records), nor read the bucket itself (no message or direct get).
        f"$JS.API.CONSUMER.INFO.{stream}.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}",
        f"$JS.ACK.{stream}.{consumer}.>",
    ]
    subscribe = [subjects.control(cluster), f"{agent_inbox_prefix(cluster)}.>"]
    # The Kubernetes gateway: requests for this cluster in, answer frames out (no reply subjects involved).
    publish.append(subjects.gateway_agent_outbound(cluster))
    subscribe.append(subjects.gateway_agent_inbound(cluster))
    return publish, subscribe


def events_reader_permissions(inbox_prefix: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) for an outside consumer of the public events: live ``tether.events.>``, and replay
    of EVENTS by reading its messages (stream info, message get: nothing that changes or creates anything).

    No consumer creation on purpose: nats-server does not check a push consumer's deliver subject against
    its creator's permissions, so a reader allowed to create one on EVENTS could aim the stream at any
    subject of the platform's account (seen in tests/clients/test_nats_cli.py). Replies come only to its
    own inbox prefix, so it reads no one else's replies."""
    stream = subjects.EVENTS_STREAM
    publish = [f"$JS.API.STREAM.INFO.{stream}", f"$JS.API.STREAM.MSG.GET.{stream}"]
    return publish, [subjects.PUBLIC_EVENTS_ANY, f"{inbox_prefix}.>"]


def bootstrap_permissions(cluster: str) -> tuple[list[str], list[str]]:
    """The bootstrap user may only trade its token for credentials."""
    return [subjects.agent_call(subjects.Registry.AGENT_BOOTSTRAP, cluster)], [f"{agent_inbox_prefix(cluster)}.>"]


# --- the platform services' users (their permissions: ``services.bus.grants``) ------------------------
def scoped_user_jwt(user_pub: str, name: str, account_pub: str, scoped_seed: str) -> str:
    """A user signed by a scoped signing key: no permissions or limits of its own (the server refuses a
    scoped user that has any); it gets the scope's template."""
    nats_claims = {"issuer_account": account_pub, "type": "user", "version": 2}
    return encode_jwt({"sub": user_pub, "name": name, "nats": nats_claims}, scoped_seed)


def service_creds_file(service: str) -> str:
    return f"svc-{service}.creds"


# --- the trust, on disk ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Trust:
    """All keys of one platform. Seeds are secrets: the directory is 0700, files 0600."""

    operator: str
    operator_signing: str
    system_account: str
    account: str
    account_signing: str
    system_user: str

    FIELDS = ("operator", "operator_signing", "system_account", "account", "account_signing", "system_user")

    @classmethod
    def create(cls) -> Trust:
        return cls(
            operator=new_seed("operator"),
            operator_signing=new_seed("operator"),
            system_account=new_seed("account"),
            account=new_seed("account"),
            account_signing=new_seed("account"),
            system_user=new_seed("user"),
        )

    @classmethod
    def load(cls, directory: Path) -> Trust:
        data = json.loads((directory / "trust.json").read_text())
        return cls(**{k: data[k] for k in cls.FIELDS})

    @classmethod
    def load_or_create(cls, directory: Path) -> tuple[Trust, bool]:
        if (directory / "trust.json").exists():
            return cls.load(directory), False
        trust = cls.create()
        write_secret(directory / "trust.json", json.dumps({k: getattr(trust, k) for k in cls.FIELDS}, indent=2))
        return trust, True

    @functools.cached_property
    def account_pub(self) -> str:
        """Derived once (75 us each time: it is in every agent's JWT the registry signs)."""
        return public_key(self.account)

    @property
    def system_account_pub(self) -> str:
        return public_key(self.system_account)

    def operator_jwt(self) -> str:
        return operator_jwt(self.operator, public_key(self.operator_signing), self.system_account_pub)

    def account_jwt(self, revocations: dict[str, int] | None = None) -> str:
        return account_jwt(
            self.account_pub,
            "TETHER",
            self.operator_signing,
            signing_keys=[public_key(self.account_signing), *self.service_scopes()],
            jetstream=True,
            revocations=revocations,
        )

    def service_signing_seed(self, service: str) -> str:
        """The seed of ``service``'s scoped signing key: derived from the account signing key, so the trust on
        disk stays as it was (and as secret)."""
        return new_seed("account", hashlib.sha256(f"tether:scope:{service}:{self.account_signing}".encode()).digest())

    def service_scopes(self) -> list[dict[str, Any]]:
        return [service_scope(s, public_key(self.service_signing_seed(s))) for s in SERVICE_GRANTS]

    def service_creds(self, service: str) -> str:
        """Creds for ``service``'s own NATS user (its permissions: ``SERVICE_GRANTS``, through its scope)."""
        seed = new_seed("user")
        jwt = scoped_user_jwt(
            public_key(seed), f"tether-{service}", self.account_pub, self.service_signing_seed(service)
        )
        return creds(jwt, seed)

    def system_account_jwt(self) -> str:
        return account_jwt(self.system_account_pub, "SYS", self.operator_signing, signing_keys=[], jetstream=False)

    def system_creds(self) -> str:
        jwt = user_jwt(public_key(self.system_user), "tether-sys", self.system_account_pub, self.system_account)
        return creds(jwt, self.system_user)

    def user_creds(self, name: str, seed: str | None = None, **kwargs: Any) -> str:
        """Creds for a user of the TETHER account (unrestricted unless permissions are given)."""
        seed = seed or new_seed("user")
        return creds(user_jwt(public_key(seed), name, self.account_pub, self.account_signing, **kwargs), seed)

    def server_config(self, resolver_dir: Path) -> str:
        """The nats-server auth block: operator mode, a full resolver, both accounts preloaded."""
        return "\n".join(
            [
                f"operator: {json.dumps(self.operator_jwt())}",
                f"system_account: {self.system_account_pub}",
                "resolver: {",
                "  type: full",
                f"  dir: {json.dumps(str(resolver_dir))}",
                "  allow_delete: false",
                '  interval: "2m"',
                "}",
                "resolver_preload: {",
                f"  {self.account_pub}: {json.dumps(self.account_jwt())}",
                f"  {self.system_account_pub}: {json.dumps(self.system_account_jwt())}",
                "}",
            ]
        )


def prepare(directory: Path) -> Trust:
    """Load (or create, on first start) the trust, and write the creds files the platform uses:
    ``svc-<service>.creds`` for each service (``SERVICE_GRANTS``), ``platform.creds`` (unrestricted, for
    operators' tools and tests) and ``sys.creds`` for the registry's account updates."""
    trust, _created = Trust.load_or_create(directory)
    if not (directory / "platform.creds").exists():
        write_secret(directory / "platform.creds", trust.user_creds("tether-platform"))
    # One user per service. Its permissions are in the account JWT (this version's, at every start).
    for service in SERVICE_GRANTS:
        write_secret(directory / service_creds_file(service), trust.service_creds(service))
    write_secret(directory / "sys.creds", trust.system_creds())
    return trust
