"""The NATS users the registry signs with the platform's trust: a connect token's bootstrap user (good for one
call), an agent's own user (its cluster's subjects only), and an outside reader of the public events."""

from __future__ import annotations

import logging
import time

from schemas.credentials import bootstrap_seed, events_inbox_prefix, parse_connect_token
from schemas.errors import Unavailable
from schemas.messages import ClusterRecord, EventsCreds, EventsCredsRequest
from schemas.names import check_name
from services.bus import identity, limits
from services.bus.identity import Trust
from services.registry import logic

logger = logging.getLogger(__name__)


def bootstrap_user_jwt(trust: Trust, record: ClusterRecord, token: str) -> str:
    """The JWT of the bootstrap user a connect token carries: its key derived from the token's secret, allowed
    only the cluster's bootstrap call, expiring with the token."""
    _cluster, secret, _ = parse_connect_token(token)
    seed = bootstrap_seed(secret)
    pub_allow, sub_allow = identity.bootstrap_permissions(record.name)
    return identity.user_jwt(
        identity.public_key(seed),
        f"bootstrap-{record.name}",
        trust.account_pub,
        trust.account_signing,
        pub_allow=pub_allow,
        sub_allow=sub_allow,
        expires=record.token_expires_at,
        payload=limits.BOOTSTRAP_MAX_PAYLOAD,
        subs=limits.BOOTSTRAP_MAX_SUBS,
    )


def agent_user_jwt(trust: Trust, cluster: str, user_key: str, ttl: float) -> tuple[str, float]:
    """The JWT of an agent's own NATS user (the key it made), and when it expires."""
    expires = time.time() + ttl
    pub_allow, sub_allow = identity.agent_permissions(cluster)
    jwt = identity.user_jwt(
        user_key,
        f"agent-{cluster}",
        trust.account_pub,
        trust.account_signing,
        pub_allow=pub_allow,
        sub_allow=sub_allow,
        expires=expires,
        tags=[f"cluster:{cluster}"],
        payload=limits.AGENT_MAX_PAYLOAD,
        subs=limits.AGENT_MAX_SUBS,
        data=limits.AGENT_MAX_DATA,
    )
    return jwt, expires


class EventsReaders:
    def __init__(self, trust: Trust | None) -> None:
        self.trust = trust

    async def creds(self, req: EventsCredsRequest) -> EventsCreds:
        """A subscribe-only NATS user for an outside consumer of the public events (signed here, the seed
        made here and handed over once: the platform keeps no copy)."""
        name = check_name(req.name, "events reader name")
        ttl = logic.events_creds_ttl(req.ttl)
        if self.trust is None:
            raise Unavailable("this platform's NATS runs without identities; no credentials to sign")
        prefix = events_inbox_prefix(name)
        pub_allow, sub_allow = identity.events_reader_permissions(prefix)
        expires = time.time() + ttl
        text = self.trust.user_creds(
            f"events-{name}", pub_allow=pub_allow, sub_allow=sub_allow, expires=expires, tags=["events-reader"]
        )
        logger.info("events reader credentials for %r signed (expire in %.0f days)", name, ttl / 86400)
        return EventsCreds(name=name, creds=text, inbox_prefix=prefix, expires_at=expires)
