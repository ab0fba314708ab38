"""Bootstrap: a one-time connect token traded for this agent's own credential and NATS user.

The NATS user's seed is made here and never leaves the state directory (nor the agent's own state Secret):
the platform only sees its public key and signs a JWT for it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from agent import VERSION
from agent.bus import Connection
from agent.errors import PermanentError
from agent.identity.calls import call
from agent.identity.files import Credentials, IdentityFiles
from schemas import subjects
from schemas.credentials import new_user_seed, parse_connect_token
from schemas.credentials import public_key as nats_public_key
from schemas.errors import Gone, TetherError
from schemas.messages import AgentBootstrap, AgentCredentials, AgentWelcome

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Bootstrapping:
    """What the platform is told about the cluster being connected."""

    cluster_uid: str
    kubernetes_version: str
    driver: str
    protocol: int
    """``AGENT_PROTOCOL`` of this agent: the registry answers the first hello with the credentials only for the
    protocol it speaks (an older agent's hello is where it is told to upgrade)."""


async def bootstrap(
    conn: Connection, files: IdentityFiles, token: str, *, server: str, about: Bootstrapping, timeout: float
) -> tuple[Credentials, AgentWelcome | None]:
    """Trade ``token`` for this agent's credential, store it with its NATS user; PermanentError when refused.
    With it, the answer to the first hello when the registry gave one (``AgentCredentials.welcome``).

    The NATS key is kept before it is sent: asked again with the same key (a retry here, or after a restart),
    the registry answers again, so an answer lost on the way does not cost the token."""
    seed = files.pending_seed() or new_user_seed()
    try:
        files.keep_pending_seed(seed)
    except OSError as exc:
        raise PermanentError(f"cannot write the agent's state in {files.state_dir}: {exc}") from exc
    message = AgentBootstrap(
        token=token,
        cluster_uid=about.cluster_uid,
        agent_version=VERSION,
        kubernetes_version=about.kubernetes_version,
        driver=about.driver,
        user_public_key=nats_public_key(seed),
        protocol=about.protocol,
    )
    failed: list[TetherError] = []
    try:
        answer = await call(
            conn,
            "connecting the cluster",
            subjects.agent_call(subjects.Registry.AGENT_BOOTSTRAP, parse_connect_token(token)[0]),
            message,
            AgentCredentials,
            timeout=timeout,
            failures=failed,
        )
    except TetherError as exc:
        text = exc.description
        if isinstance(exc, Gone) and failed:
            # A retry of our own is answered again (same key); spent means another key spent it, or this
            # agent lost its state directory in between.
            text = (
                f"{text} (by another agent, or by this one before its state was lost: disconnect the cluster "
                "and connect it again)"
            )
        raise PermanentError(text) from exc
    welcome = answer.welcome if answer.welcome is not None and answer.welcome.cluster == answer.cluster else None
    return _keep(files, answer, seed, server), welcome


def _keep(files: IdentityFiles, answer: AgentCredentials, seed: str, server: str) -> Credentials:
    credentials = Credentials(cluster=answer.cluster, credential=answer.credential, server=server)
    try:
        if answer.jwt:
            files.save_nats_user(answer.jwt, seed)
        path = files.save(credentials)
        files.drop_pending_seed()
    except OSError as exc:
        raise PermanentError(
            f"the cluster {answer.cluster!r} was connected, but its credential cannot be saved ({exc}); "
            f"disconnect it ('tether cluster disconnect {answer.cluster}') and connect it again"
        ) from exc
    logger.info("cluster %r connected to the platform; credentials saved in %s", answer.cluster, path)
    return credentials
