"""Shapes of the secrets agents hold: connect tokens, NATS user creds, inboxes.

Pure helpers both sides need (the registry issues, the agent reads). A connect
token is ``tct.<cluster>.<secret>`` or, when the broker enforces identities,
``tct.<cluster>.<secret>.<bootstrap-user-JWT>``: the bootstrap user's nkey is
derived from the secret, so the token alone lets the agent call the bootstrap
endpoint and nothing else, until it expires.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

import nkeys

from schemas.errors import Unauthenticated
from schemas.names import check_name

CONNECT_TOKEN_PREFIX = "tct"


def new_user_seed(entropy: bytes | None = None) -> str:
    raw = entropy if entropy is not None else os.urandom(32)
    return nkeys.encode_seed(raw[:32], nkeys.PREFIX_BYTE_USER).decode()  # type: ignore[no-any-return]


def public_key(seed: str) -> str:
    return str(nkeys.from_seed(seed.encode()).public_key.decode())


def bootstrap_seed(secret: str) -> str:
    """The bootstrap user's seed, derived from the connect token's secret."""
    return new_user_seed(hashlib.sha256(f"tether:bootstrap:{secret}".encode()).digest())


def agent_inbox_prefix(cluster: str) -> str:
    """Each agent's replies come to its own inbox, so no agent can read another's."""
    return f"_INBOX_{check_name(cluster, 'cluster name')}"


def events_inbox_prefix(name: str) -> str:
    """An outside events reader's reply inbox: its own, so it reads no one's replies (cluster names
    have no ``_``, so this never meets an agent's)."""
    return f"_INBOX_events_{check_name(name, 'events reader name')}"


def parse_connect_token(token: str) -> tuple[str, str, str]:
    """(cluster, secret, bootstrap JWT or '') of a connect token; Unauthenticated when malformed."""
    parts = token.split(".", 3)
    if len(parts) < 3 or parts[0] != CONNECT_TOKEN_PREFIX or not parts[2]:
        raise Unauthenticated("malformed connect token")
    jwt = parts[3] if len(parts) == 4 else ""
    if jwt and jwt.count(".") != 2:
        raise Unauthenticated("malformed connect token")
    return check_name(parts[1], "cluster name"), parts[2], jwt


def creds(jwt: str, seed: str) -> str:
    """The ``.creds`` text NATS clients read."""
    return (
        "-----BEGIN NATS USER JWT-----\n"
        f"{jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n"
        "NKEYs are sensitive and should be treated as secrets.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{seed}\n"
        "------END USER NKEY SEED------\n\n"
        "*************************************************************\n"
    )


def read_creds(text: str) -> tuple[str, str]:
    """(JWT, seed) from ``.creds`` text."""
    lines = [line.strip() for line in text.splitlines()]
    try:
        jwt = lines[lines.index("-----BEGIN NATS USER JWT-----") + 1]
        seed = lines[lines.index("-----BEGIN USER NKEY SEED-----") + 1]
    except (ValueError, IndexError):
        raise Unauthenticated("malformed NATS credentials") from None
    return jwt, seed


def jwt_claims(jwt: str) -> dict[str, object] | None:
    """A JWT's claims, unverified, or None when it is not one."""
    parts = jwt.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


def jwt_publish_allows(jwt: str) -> list[str]:
    """The subjects a NATS user JWT lists as allowed to publish (``nats.pub.allow``), unverified; empty for one
    that lists none or is malformed."""
    claims = jwt_claims(jwt) or {}
    nats = claims.get("nats")
    pub = nats.get("pub") if isinstance(nats, dict) else None
    allow = pub.get("allow") if isinstance(pub, dict) else None
    return [str(s) for s in allow] if isinstance(allow, list) else []


def jwt_times(jwt: str) -> tuple[float, float]:
    """(issued at, expires at or 0) of a JWT, unverified."""
    claims = jwt_claims(jwt)
    if claims is None:
        raise Unauthenticated("malformed JWT: not a JWT's three parts with JSON claims")
    try:
        return float(claims.get("iat", 0)), float(claims.get("exp", 0))  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise Unauthenticated(f"malformed JWT: {exc}") from None
