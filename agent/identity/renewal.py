"""Renewing the agent's NATS user JWT at about three quarters of its life, forever: one of the loops that keep
the agent standing (``Session``)."""

from __future__ import annotations

import asyncio
import logging
import random
import time

from agent.identity.calls import call
from agent.identity.session import Session
from schemas import subjects
from schemas.credentials import jwt_publish_allows, jwt_times
from schemas.messages import AgentCredentials, AgentRenew

logger = logging.getLogger(__name__)


def current(jwt: str, cluster: str) -> bool:
    """Whether the JWT allows what this version's agent does: fetching from its consumer on its cluster's
    desired-state bucket (``desired_stream``)."""
    fetch = f"$JS.API.CONSUMER.MSG.NEXT.{subjects.desired_stream(cluster)}.{subjects.agent_consumer(cluster)}"
    return fetch in jwt_publish_allows(jwt)


async def renewals(session: Session) -> None:
    """Renew the NATS user JWT at about three quarters of its life (jittered), forever."""
    credentials = session.credentials
    assert credentials is not None
    while True:
        user = session.files.nats_user()
        if user is None:
            return  # an open NATS: nothing to renew
        jwt, seed = user
        issued, expires = jwt_times(jwt)
        if not expires:
            return
        life = max(1.0, expires - issued)
        at = issued + life * random.uniform(0.70, 0.80)
        if not current(jwt, credentials.cluster):
            # Issued by an earlier version, for its subjects (the desired state's one bucket): this version's
            # consumer is out of its reach until a JWT of this version replaces it.
            logger.warning("NATS credentials of an earlier version; renewing them now")
            at = time.time()
        await asyncio.sleep(max(0.0, at - time.time()))
        answer = await call(
            session.connection,
            "renewing the agent's NATS credentials",
            subjects.agent_call(subjects.Registry.AGENT_RENEW, credentials.cluster),
            AgentRenew(cluster=credentials.cluster, credential=credentials.credential),
            AgentCredentials,
            timeout=session.settings.request_timeout,
        )
        if answer.jwt:
            session.files.save_nats_user(answer.jwt, seed)
            logger.info(
                "NATS credentials renewed; valid until %s",
                time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(answer.expires_at)),
            )
            # Present them now: the server closes a connection whose JWT expires. Commands wait
            # in their stream meanwhile, so nothing is dropped.
            await session.connection.force_reconnect()
