"""This agent's standing with the platform: connect as whom, bootstrap, hello, renew, revoked.

``open()`` decides who to be (the stored credential, or the connect token when
there is none or it names another cluster), connects as that NATS user, trades
a token for this agent's own credential and NATS user (``bootstrap``), listens
for control notices and says hello. A stored identity the platform refuses is
replaced by a given token once. Then three loops keep it standing: ``hellos``
(again after every reconnect), ``renewals`` (``agent.identity.renewal``: the NATS JWT at about three
quarters of its life) and ``revocations`` (a ``revoked`` notice, or the broker
refusing us for good, stops the agent with ``PermanentError``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from agent import VERSION
from agent.bus import Connection, NatsIdentity, Subscription, connect
from agent.errors import AgentError, PermanentError
from agent.health import HealthReader
from agent.identity.bootstrap import Bootstrapping, bootstrap
from agent.identity.calls import call
from agent.identity.files import Credentials, IdentityFiles
from agent.identity.users import bootstrap_user, own_user, reconnect_hint
from agent.settings import AgentSettings
from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from schemas.errors import NotFound, TetherError, Unauthenticated
from schemas.messages import (
    AGENT_PROTOCOL,
    AgentHello,
    AgentWelcome,
    ControlNotice,
    decode,
)
from schemas.retrying import NOT_LISTENING_BACKOFF

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 5.0
"""Used when the platform's welcome carries no usable interval."""
MAX_UNHEARD_BACKOFF = 60.0
"""The longest wait between unheard hellos a welcome may ask for (a larger one is ignored: the default holds)."""
PATIENT_TIMEOUT = 30.0
"""Seconds to wait for the hello's (and the bootstrap's) answer. After a platform restart every agent says
hello at once; asking again after a short timeout does not get an answer sooner (the first request is still
in the queue and will be served) but lengthens the queue for all: 10,000 agents retrying hellos every 5 s
kept the registry busy with questions nobody waited for any more."""


def planned_cluster(settings: AgentSettings) -> str | None:
    """The cluster this agent will connect as: the token's when it names another, else the stored one."""
    stored = IdentityFiles(settings.state_path).load()
    token_cluster = settings.token_cluster
    if token_cluster is not None and (stored is None or stored.cluster != token_cluster):
        return token_cluster
    return stored.cluster if stored else token_cluster


@dataclass
class Plan:
    """Who to be at start: the stored credentials, or the token to trade; a token kept for a refusal."""

    stored: Credentials | None
    token: str | None
    fallback_token: str | None
    server: str
    cluster: str


def plan(settings: AgentSettings, files: IdentityFiles) -> Plan:
    """Choose between the stored identity and the given token; PermanentError when there is neither."""
    stored, token, token_cluster = files.load(), settings.token, settings.token_cluster
    fallback_token: str | None = None
    if stored is not None and token is not None:
        if stored.cluster == token_cluster:
            logger.info(
                "cluster %r is already connected (credentials in %s); the connect token is not needed and is ignored",
                stored.cluster,
                files.credentials_path,
            )
            fallback_token, token = token, None
        else:
            logger.warning(
                "%s holds credentials of cluster %r; connecting cluster %r with the given token instead",
                files.credentials_path,
                stored.cluster,
                token_cluster,
            )
            stored = None
    if stored is None and token is None:
        raise PermanentError(
            f"no agent credentials in {settings.state_path} and no connect token: start the agent with "
            "--token (from 'tether cluster connect <name>')"
        )
    server = settings.server or (stored.server if stored else "")
    if not server:
        raise PermanentError("no NATS server given: pass --server (or set TETHER_AGENT_SERVER)")
    cluster = stored.cluster if stored else (token_cluster or "?")
    return Plan(stored=stored, token=token, fallback_token=fallback_token, server=server, cluster=cluster)


class Session:
    """One agent's identity on the platform, from the first connect to the last notice."""

    def __init__(self, settings: AgentSettings, health: HealthReader, *, cluster_uid: str, driver: str) -> None:
        self.settings = settings
        self.files = IdentityFiles(settings.state_path)
        self._health = health
        self._cluster_uid = cluster_uid
        self._driver = driver
        self._conn: Connection | None = None
        self._server = ""
        self._inbox_cluster = "?"
        self.credentials: Credentials | None = None
        self.heartbeat_interval = settings.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        self.consumer = ""
        """The command consumer the platform's last welcome said it made sure of ("" when it named none)."""
        self.not_listening = NOT_LISTENING_BACKOFF
        """(base, cap) seconds between hellos nobody listens to; the cap as the last welcome sized it."""
        self.consumer_bound: Callable[[], bool] = lambda: False
        """Whether the command consumer is bound and found by its fetches (told in each hello)."""
        self.consumer_gone: Callable[[], bool] = lambda: False
        """Whether a fetch found the command consumer gone since it was last bound (told in each hello)."""
        self.reconnected = asyncio.Event()
        """Set after every reconnect (and when the command consumer is missing): say hello again."""
        self.greeting = False
        """A hello after a reconnect is under way."""
        self.listening = asyncio.Event()
        """Set by the registry's ``listening`` notice: a hello waiting after one nobody heard is asked at once."""
        self._control: Subscription | None = None

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise AgentError("the agent is not connected")
        return self._conn

    @property
    def cluster(self) -> str:
        if self.credentials is None:
            raise AgentError("the agent has no credentials yet")
        return self.credentials.cluster

    # --- start --------------------------------------------------------------------------------
    async def open(self, plan: Plan) -> None:
        """Connect, bootstrap when needed, listen for notices, say hello; PermanentError when refused."""
        self._server, self._inbox_cluster = plan.server, plan.cluster
        stored, token, fallback_token = plan.stored, plan.token, plan.fallback_token
        try:
            await self._connect(own_user(self.files, stored.cluster) if stored else bootstrap_user(token or ""))
        except PermanentError:
            if stored is None or fallback_token is None:
                raise
            # Our own NATS user was refused (revoked): the given token starts over.
            logger.warning("the stored NATS credentials were refused; trying the given connect token")
            stored, token, fallback_token = None, fallback_token, None
            await self._connect(bootstrap_user(token))
        welcome: AgentWelcome | None = None
        if stored is None:
            assert token is not None
            stored, welcome = await self.bootstrap(token)
            if self.files.has_nats_user:
                # From the one-call bootstrap user to this agent's own NATS user. Its one call is answered:
                # nothing to drain.
                await self.connection.close(drain=False)
                await self._connect(own_user(self.files, stored.cluster))
        self.credentials = stored
        # Listen before saying hello, so a revocation right after it is not missed.
        self._control = await self.connection.subscribe(subjects.control(stored.cluster))
        self.reconnected.clear()
        if welcome is not None:
            # The registry answered the first hello with the credentials (its consumer made at registration):
            # a hello now would only present the credential it just issued. Hellos after reconnects as always.
            self._welcomed(welcome)
        else:
            await self._first_hello(fallback_token)

    async def _first_hello(self, fallback_token: str | None) -> None:
        try:
            await self.hello()
        except PermanentError as refused:
            cause = refused.__cause__
            if fallback_token is None or not isinstance(cause, Unauthenticated | NotFound):
                raise
            logger.warning(
                "the stored credentials were refused (%s); trying the given connect token", cause.description
            )
            try:
                self.credentials, _welcome = await self.bootstrap(fallback_token)
            except PermanentError as exc:
                raise PermanentError(f"{cause.description}; the given connect token did not help: {exc}") from exc
            await self.hello()

    async def _connect(self, identity: NatsIdentity | None) -> None:
        self._conn = await connect(
            replace(self.settings, server=self._server),
            f"tether-agent-{self.settings.token_cluster or 'agent'}",
            identity=identity,
            on_reconnected=self.reconnected.set,
            # Even on an open NATS: the platform answers an agent only into its own cluster's inbox.
            inbox_prefix=agent_inbox_prefix(self._inbox_cluster) if self._inbox_cluster != "?" else None,
        )

    async def bootstrap(self, token: str) -> tuple[Credentials, AgentWelcome | None]:
        """Trade the connect token for this agent's own credential and store it (``agent.identity.bootstrap``);
        the first hello's answer when the registry gave it with them."""
        return await bootstrap(
            self.connection,
            self.files,
            token,
            server=self._server,
            about=Bootstrapping(
                cluster_uid=self._cluster_uid,
                kubernetes_version=self._health.last.kubernetes_version,
                driver=self._driver,
                protocol=AGENT_PROTOCOL,
            ),
            # Patient like the hello, and more so: the token is spent by the first request that reaches the
            # registry, so asking again after a short timeout while the first is still being handled finds it
            # spent and the agent gives up (539 of 10,000 agents did, with 5 s, in a connect storm).
            timeout=max(PATIENT_TIMEOUT, self.settings.request_timeout),
        )

    # --- hello ----------------------------------------------------------------------------------
    async def hello(self) -> None:
        """Present the credential; PermanentError (cause: the service's error) when refused."""
        assert self.credentials is not None
        health = await self._health.current()
        message = AgentHello(
            cluster=self.credentials.cluster,
            credential=self.credentials.credential,
            cluster_uid=self._cluster_uid,
            agent_version=VERSION,
            kubernetes_version=health.kubernetes_version,
            driver=self._driver,
            protocol=AGENT_PROTOCOL,
            consumer_bound=self.consumer_bound(),
            consumer_gone=self.consumer_gone(),
        )
        try:
            welcome = await call(
                self.connection,
                "saying hello to the platform",
                subjects.agent_call(subjects.Registry.AGENT_HELLO, self.credentials.cluster),
                message,
                AgentWelcome,
                timeout=max(PATIENT_TIMEOUT, self.settings.request_timeout),
                not_listening=self.not_listening,
                wake=self.listening,
            )
        except TetherError as exc:
            text = exc.description
            if isinstance(exc, Unauthenticated | NotFound):
                text = f"{text}; {reconnect_hint(self.credentials.cluster)}"
            raise PermanentError(text) from exc
        self._welcomed(welcome)

    def _welcomed(self, welcome: AgentWelcome) -> None:
        self.consumer = welcome.consumer
        if NOT_LISTENING_BACKOFF[1] <= welcome.unheard_backoff <= MAX_UNHEARD_BACKOFF:
            self.not_listening = (NOT_LISTENING_BACKOFF[0], welcome.unheard_backoff)
        if self.settings.heartbeat_interval is not None:
            interval = self.settings.heartbeat_interval
        elif 0 < welcome.heartbeat_interval <= 3600:
            interval = welcome.heartbeat_interval
        else:
            logger.warning(
                "the platform asked for a heartbeat every %gs; using %gs",
                welcome.heartbeat_interval,
                DEFAULT_HEARTBEAT_INTERVAL,
            )
            interval = DEFAULT_HEARTBEAT_INTERVAL
        if interval != self.heartbeat_interval:
            logger.info("heartbeat every %gs", interval)
        self.heartbeat_interval = interval
        logger.info("platform welcomed cluster %r", welcome.cluster)

    async def hellos(self, after: Callable[[], None]) -> None:
        """Say hello again after every reconnect, then ``after()``; a refusal stops the agent."""
        while True:
            await self.reconnected.wait()
            self.reconnected.clear()
            self.greeting = True
            try:
                await self.hello()
            finally:
                self.greeting = False
            after()

    @property
    def welcomed(self) -> bool:
        """No hello is due or under way: the platform welcomed this link."""
        return not self.greeting and not self.reconnected.is_set()

    # --- revoke ---------------------------------------------------------------------------------
    async def control_notices(self) -> None:
        """Obey control notices: ``revoked`` stops the agent (PermanentError); ``listening`` ends the wait of a
        hello nobody heard."""
        assert self._control is not None
        async for incoming in self._control:
            try:
                notice = decode(incoming.data, ControlNotice)
            except TetherError as exc:
                logger.warning("ignoring a control notice on %s: %s", incoming.subject, exc.description)
                continue
            if notice.kind == "listening":
                self.listening.set()
            elif notice.kind == "revoked":
                reason = notice.reason or f"cluster {self.cluster!r} was disconnected from the platform"
                logger.error("the platform revoked this agent: %s", reason)
                raise PermanentError(f"{reason}; {reconnect_hint(self.cluster)}")

    async def refusal(self) -> None:
        """Until the broker refuses us for good (PermanentError) or closes the link for good (AgentError)."""
        conn = self.connection
        refused = asyncio.ensure_future(conn.refused.wait())
        lost = asyncio.ensure_future(conn.lost.wait())
        try:
            await asyncio.wait({refused, lost}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
            lost.cancel()
        if not conn.refused.is_set():
            raise AgentError("the NATS server closed the connection for good; the agent stops (restart it)")
        identity = own_user(self.files, self.credentials.cluster if self.credentials else "?")
        raise PermanentError(identity.refused if identity else "NATS refused this agent's credentials")

    # --- stop -----------------------------------------------------------------------------------
    async def unsubscribe(self) -> None:
        if self._control is not None:
            await self._control.unsubscribe()

    async def close(self, timeout: float) -> None:
        if self._conn is not None:
            await self._conn.close(timeout)
