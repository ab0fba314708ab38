"""Who the agent is to the broker: its own NATS user, or the one-call user a connect token carries."""

from __future__ import annotations

from agent.bus import NatsIdentity
from agent.errors import PermanentError
from agent.identity.files import IdentityFiles
from schemas.credentials import agent_inbox_prefix, bootstrap_seed, parse_connect_token
from schemas.credentials import creds as creds_text
from schemas.errors import TetherError


def reconnect_hint(cluster: str) -> str:
    return (
        f"to connect it again, get a new connect token ('tether cluster connect {cluster}') "
        "and start the agent with --token"
    )


def own_user(files: IdentityFiles, cluster: str) -> NatsIdentity | None:
    """This agent's own NATS user, when the platform gave it one."""
    if not files.has_nats_user:
        return None
    return NatsIdentity(
        creds=str(files.nats_creds_path),
        inbox_prefix=agent_inbox_prefix(cluster),
        refused=(
            f"NATS refused the credentials of cluster {cluster!r}: the cluster was disconnected from the "
            f"platform, or its credentials expired while the agent was away; connect it again with a new "
            f"connect token ('tether cluster connect {cluster}')"
        ),
    )


def bootstrap_user(token: str) -> NatsIdentity | None:
    """The one-call NATS user a connect token carries (None for tokens of an open NATS)."""
    try:
        cluster, secret, jwt = parse_connect_token(token)
    except TetherError as exc:
        raise PermanentError(f"invalid connect token: {exc.description}") from None
    if not jwt:
        return None
    return NatsIdentity(
        creds=creds_text(jwt, bootstrap_seed(secret)),
        inbox_prefix=agent_inbox_prefix(cluster),
        in_memory=True,
        refused=(
            f"NATS refused the connect token of cluster {cluster!r}: it is wrong or expired; run "
            f"'tether cluster connect {cluster}' again for a new one"
        ),
    )
