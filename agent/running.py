"""The agent's life: identity, hello, heartbeats, control notices, and an orderly stop.

Start-up, in order:

1. lock the state directory (one agent per identity), make the driver, read
   the cluster's UID and health;
2. connect to NATS (retries forever);
3. credentials: the stored ones, or trade the connect token for new ones;
4. listen for control notices, then say hello (refused once the cluster was
   disconnected from the platform);
5. heartbeat at once, so the cluster shows online within a second.

Then five tasks run until the agent is stopped or refused: ``agent-heartbeat``,
``agent-hello`` (hello again after every reconnect), ``agent-control``,
``agent-commands`` (this cluster's commands from the CMD stream, one at a time,
through ``agent.commands``) and ``agent-inventory`` (what the driver holds, on
every (re)connect and every ``inventory_interval`` seconds).

An orderly stop (``stop()``, SIGTERM) stops fetching commands, lets the command
being applied finish and its result go out (up to ``shutdown_timeout``), then
drains the connection. Anything cut short is redelivered on the next start and
made harmless by the revision check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Literal

import msgspec
from opentelemetry.sdk.trace import TracerProvider

from agent import VERSION
from agent import credentials as creds_store
from agent.bus import CommandQueue, Connection, NatsIdentity, Subscription, connect, request
from agent.commands import CommandApplier
from agent.credentials import Credentials
from agent.drivers import Driver, StatusReporting, make_driver
from agent.errors import AgentError, DriverError, PermanentError
from agent.gateway import AgentGateway
from agent.settings import AgentSettings
from agent.statefiles import NATS_CREDS_FILE, StateLock, write_text_atomic
from agent.statuses import StatusReporter
from agent.telemetry import AgentMetrics
from agent.telemetry import tracer_provider as make_tracer_provider
from schemas import subjects
from schemas.credentials import (
    agent_inbox_prefix,
    bootstrap_seed,
    jwt_times,
    new_user_seed,
    parse_connect_token,
    read_creds,
)
from schemas.credentials import creds as creds_text
from schemas.credentials import public_key as nats_public_key
from schemas.errors import Gone, Internal, NotFound, TetherError, Unauthenticated, Unavailable
from schemas.messages import (
    MAX_OBJECTS,
    AgentBootstrap,
    AgentCredentials,
    AgentHello,
    AgentRenew,
    AgentWelcome,
    ClusterHealth,
    CommandResult,
    ControlNotice,
    Heartbeat,
    Inventory,
    M,
    Message,
    decode,
)
from schemas.retrying import backoff_delay

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_INTERVAL = 5.0
"""Used when the platform's welcome carries no usable interval."""
RETRY_BACKOFF = (0.5, 30.0)
"""(base, cap) seconds between attempts of a request the platform could not answer."""
INVENTORY_BACKOFF = (1.0, 30.0)
"""(base, cap) seconds between attempts to publish one inventory."""
PUBLISH_TIMEOUT = 5.0
STATUS_INTERVAL = 2.0
"""Seconds at most between two looks at the workloads' status (a tenant becoming Ready is reported within it)."""
"""Seconds to wait for a stream to acknowledge a result."""
PATIENT_TIMEOUT = 30.0
"""Seconds to wait for the hello's answer and the inventory's acknowledgement. After a platform restart
every agent sends both at once; asking again after a short timeout does not get an answer sooner (the
first request is still in the queue and will be served) but lengthens the queue for all: 10,000 agents
retrying hellos every 5 s kept the registry busy with questions nobody waited for any more."""


def planned_cluster(settings: AgentSettings) -> str | None:
    """The cluster this agent will connect as: the token's when it names another, else the stored one."""
    stored = creds_store.load(settings.state_path)
    token_cluster = settings.token_cluster
    if token_cluster is not None and (stored is None or stored.cluster != token_cluster):
        return token_cluster
    return stored.cluster if stored else token_cluster


def _reconnect_hint(cluster: str) -> str:
    return (
        f"to connect it again, get a new connect token ('tether cluster connect {cluster}') "
        "and start the agent with --token"
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


class Agent:
    """One agent. Use as ``async with Agent(settings) as agent: await agent.wait()``.

    ``stop()`` is safe to call twice and from any task; ``wait()`` returns when
    the agent was stopped and raises PermanentError when it stopped itself
    (revoked, refused).
    """

    def __init__(
        self, settings: AgentSettings, *, driver: Driver | None = None, tracer_provider: TracerProvider | None = None
    ) -> None:
        self.settings = settings
        self._tracer_provider = tracer_provider or make_tracer_provider(settings.token_cluster or "")
        self.metrics = AgentMetrics(settings.token_cluster or "")
        self.session = secrets.token_hex(8)
        """Random per process: the platform sees a restart as a new session."""
        self._driver = driver
        self._owns_driver = driver is None
        self._lock = StateLock(settings.state_path)
        self._conn: Connection | None = None
        self._server = ""
        self._inbox_cluster = "?"
        self._credentials: Credentials | None = None
        self._cluster_uid = ""
        self._health = ClusterHealth(agent_version=VERSION)
        self._api_ok = True
        self._interval = settings.heartbeat_interval or DEFAULT_HEARTBEAT_INTERVAL
        self._seq = 0
        self._reconnected = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._control: Subscription | None = None
        self._queue: CommandQueue | None = None
        self._applier: CommandApplier | None = None
        self._gateway: AgentGateway | None = None
        self._statuses: StatusReporter | None = None
        self._in_flight: asyncio.Task[object] | None = None
        self._stopping = asyncio.Event()
        self._inventory_now = asyncio.Event()
        self._inventories = 0
        self._main: asyncio.Task[None] | None = None
        self._shutdown_task: asyncio.Task[None] | None = None

    # --- what tests and callers may look at -------------------------------------------------
    @property
    def cluster(self) -> str:
        if self._credentials is None:
            raise AgentError("the agent has no credentials yet")
        return self._credentials.cluster

    @property
    def cluster_uid(self) -> str:
        return self._cluster_uid

    @property
    def driver(self) -> Driver:
        if self._driver is None:
            raise AgentError("the agent has not started")
        return self._driver

    @property
    def heartbeat_interval(self) -> float:
        return self._interval

    @property
    def heartbeats_sent(self) -> int:
        return self._seq

    @property
    def commands_applied(self) -> int:
        """Commands this process applied (not counting redeliveries found already applied)."""
        return self._applier.applied if self._applier else 0

    @property
    def inventories_sent(self) -> int:
        return self._inventories

    @property
    def connection(self) -> Connection:
        if self._conn is None:
            raise AgentError("the agent is not connected")
        return self._conn

    # --- lifecycle ------------------------------------------------------------------------------
    async def __aenter__(self) -> Agent:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Everything up to the first heartbeat; on failure, undo what was done and raise."""
        if self._main is not None or self._shutdown_task is not None:
            raise AgentError("an agent can be started only once")
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise
        self._main = asyncio.create_task(self._serve(), name="agent-main")

    async def wait(self) -> None:
        """Until the agent stops; raises what stopped it (PermanentError when refused or revoked)."""
        if self._main is None:
            raise AgentError("the agent has not started")
        await asyncio.wait({self._main})
        if not self._main.cancelled() and (exc := self._main.exception()) is not None:
            raise exc

    async def stop(self) -> None:
        """Stop heartbeats, unsubscribe, drain the connection, close the driver. Safe twice."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown(), name="agent-shutdown")
        await asyncio.shield(self._shutdown_task)

    # --- start-up -------------------------------------------------------------------------------
    async def _start(self) -> None:
        settings = self.settings
        self._lock.acquire()

        if self._driver is None:
            try:
                self._driver = make_driver(settings)
            except DriverError as exc:
                raise PermanentError(str(exc)) from exc
        try:
            self._cluster_uid = await self._driver.cluster_uid()
            self._health = await self._driver.health()
        except DriverError as exc:
            raise PermanentError(f"cannot read the cluster through the {self._driver.name} driver: {exc}") from exc

        stored = creds_store.load(settings.state_path)
        token = settings.token
        token_cluster = settings.token_cluster
        fallback_token: str | None = None
        if stored is not None and token is not None:
            if stored.cluster == token_cluster:
                logger.info(
                    "cluster %r is already connected (credentials in %s); the connect token is not needed "
                    "and is ignored",
                    stored.cluster,
                    creds_store.path_in(settings.state_path),
                )
                fallback_token, token = token, None
            else:
                logger.warning(
                    "%s holds credentials of cluster %r; connecting cluster %r with the given token instead",
                    creds_store.path_in(settings.state_path),
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
        logger.info(
            "tether agent %s for cluster %r (driver %s, cluster UID %s, state in %s)",
            VERSION,
            cluster,
            self._driver.name,
            self._cluster_uid,
            settings.state_path,
        )

        self._server = server
        self._inbox_cluster = cluster
        identity = self._identity_for(stored.cluster) if stored is not None else None
        if stored is None:
            assert token is not None
            identity = self._bootstrap_identity(token)
        try:
            await self._connect(identity)
        except PermanentError:
            if stored is None or fallback_token is None:
                raise
            # Our own NATS user was refused (revoked): the given token starts over.
            logger.warning("the stored NATS credentials were refused; trying the given connect token")
            stored, token, fallback_token = None, fallback_token, None
            await self._connect(self._bootstrap_identity(token))

        if stored is None:
            assert token is not None
            stored = await self._bootstrap(token, server)
            if self._nats_creds.exists():
                # From the one-call bootstrap user to this agent's own NATS user.
                await self.connection.close()
                await self._connect(self._identity_for(stored.cluster))
        self._credentials = stored

        # Listen before saying hello, so a revocation right after it is not missed.
        self._control = await self.connection.subscribe(subjects.control(stored.cluster))
        self._reconnected.clear()
        try:
            await self._hello()
        except PermanentError as refused:
            cause = refused.__cause__
            if fallback_token is None or not isinstance(cause, Unauthenticated | NotFound):
                raise
            logger.warning(
                "the stored credentials were refused (%s); trying the given connect token", cause.description
            )
            try:
                self._credentials = await self._bootstrap(fallback_token, server)
            except PermanentError as exc:
                raise PermanentError(f"{cause.description}; the given connect token did not help: {exc}") from exc
            await self._hello()

        cluster = self._credentials.cluster
        # A consumer found missing (its stream re-created) is created again by the platform at a hello.
        self._queue = CommandQueue(self.connection, cluster, on_missing=self._reconnected.set)
        self.connection.on_reconnected(self._queue.invalidate)
        self._applier = CommandApplier(
            cluster,
            self._driver,
            self._publish_result,
            result_subject=subjects.evt(cluster, subjects.EVT_RESULT),
            tracer=self._tracer_provider.get_tracer("tether.agent"),
            metrics=self.metrics,
        )
        self.connection.on_reconnected(self.metrics.reconnected)
        # The Kubernetes gateway: members' kubectl requests for this cluster (a driver without an API server
        # answers them with the reason).
        host = getattr(self._driver, "gateway_upstream", None)
        tracer = self._tracer_provider.get_tracer("tether.agent.gateway")
        self._gateway = AgentGateway(self.connection, cluster, host, tracer)
        self.connection.on_reconnected(self._gateway.reset)
        if isinstance(self._driver, StatusReporting):
            self._statuses = StatusReporter(
                cluster,
                self._driver,
                self._publish_status,
                result_subject=subjects.evt(cluster, subjects.EVT_RESULT),
            )
        self._inventory_now.set()
        await self._beat()

    async def _call(
        self,
        what: str,
        subject: str,
        message: Message,
        reply_type: type[M],
        failures: list[TetherError] | None = None,
        timeout: float | None = None,
    ) -> M:
        """Request until the platform answers; Unavailable (and Internal) are retried with backoff.

        Each retried failure is appended to ``failures`` when given.
        """
        base, cap = RETRY_BACKOFF
        attempt = 0
        while True:
            try:
                return await request(
                    self.connection, subject, message, reply_type, timeout or self.settings.request_timeout
                )
            except (Unavailable, Internal) as exc:
                if failures is not None:
                    failures.append(exc)
                delay = backoff_delay(attempt, base=base, cap=cap)
                attempt += 1
                level = logging.ERROR if isinstance(exc, Internal) else logging.WARNING
                logger.log(level, "%s (attempt %d): %s; retrying in %.1fs", what, attempt, exc.description, delay)
                await asyncio.sleep(delay)

    # --- NATS identity -----------------------------------------------------------------------
    @property
    def _nats_creds(self) -> Path:
        return self.settings.state_path / NATS_CREDS_FILE

    def _identity_for(self, cluster: str) -> NatsIdentity | None:
        """This agent's own NATS user, when the platform gave it one."""
        if not self._nats_creds.exists():
            return None
        return NatsIdentity(
            creds=str(self._nats_creds),
            inbox_prefix=agent_inbox_prefix(cluster),
            refused=(
                f"NATS refused the credentials of cluster {cluster!r}: the cluster was disconnected from the "
                f"platform, or its credentials expired while the agent was away; connect it again with a new "
                f"connect token ('tether cluster connect {cluster}')"
            ),
        )

    @staticmethod
    def _bootstrap_identity(token: str) -> NatsIdentity | None:
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

    async def _connect(self, identity: NatsIdentity | None) -> None:
        self._conn = await connect(
            replace(self.settings, server=self._server),
            f"tether-agent-{self.settings.token_cluster or 'agent'}",
            identity=identity,
            on_reconnected=self._reconnected.set,
            # Even on an open NATS: the platform answers an agent only into its own cluster's inbox.
            inbox_prefix=agent_inbox_prefix(self._inbox_cluster) if self._inbox_cluster != "?" else None,
        )

    def _save_nats_creds(self, jwt: str, seed: str) -> None:
        write_text_atomic(self._nats_creds, creds_text(jwt, seed))

    async def _renewals(self) -> None:
        """Renew the NATS user JWT at about three quarters of its life (jittered), forever."""
        assert self._credentials is not None
        while True:
            try:
                text = self._nats_creds.read_text()
            except OSError:
                return  # an open NATS: nothing to renew
            jwt, seed = read_creds(text)
            issued, expires = jwt_times(jwt)
            if not expires:
                return
            life = max(1.0, expires - issued)
            at = issued + life * random.uniform(0.70, 0.80)
            await asyncio.sleep(max(0.0, at - time.time()))
            answer = await self._call(
                "renewing the agent's NATS credentials",
                subjects.agent_call(subjects.Registry.AGENT_RENEW, self._credentials.cluster),
                AgentRenew(cluster=self._credentials.cluster, credential=self._credentials.credential),
                AgentCredentials,
            )
            if answer.jwt:
                self._save_nats_creds(answer.jwt, seed)
                logger.info(
                    "NATS credentials renewed; valid until %s",
                    time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(answer.expires_at)),
                )
                # Present them now: the server closes a connection whose JWT expires. Commands wait
                # in their stream meanwhile, so nothing is dropped.
                await self.connection.force_reconnect()

    async def _watch_refusal(self) -> None:
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
        identity = self._identity_for(self._credentials.cluster if self._credentials else "?")
        raise PermanentError(identity.refused if identity else "NATS refused this agent's credentials")

    async def _bootstrap(self, token: str, server: str) -> Credentials:
        """Trade the connect token for this agent's own credential and store it."""
        health = self._health
        seed = new_user_seed()  # this agent's own NATS user; the seed never leaves this machine
        message = AgentBootstrap(
            token=token,
            cluster_uid=self._cluster_uid,
            agent_version=VERSION,
            kubernetes_version=health.kubernetes_version,
            driver=self.driver.name,
            user_public_key=nats_public_key(seed),
        )
        failed: list[TetherError] = []
        try:
            answer = await self._call(
                "connecting the cluster",
                subjects.agent_call(subjects.Registry.AGENT_BOOTSTRAP, parse_connect_token(token)[0]),
                message,
                AgentCredentials,
                failed,
            )
        except TetherError as exc:
            text = exc.description
            if isinstance(exc, Gone) and failed:
                # The token is spent by the first request that reaches the registry; if its
                # answer was lost, the retry finds it spent and the credential is gone with it.
                text = (
                    f"{text} (an earlier attempt may have connected the cluster without its answer "
                    "reaching this agent: disconnect the cluster and connect it again)"
                )
            raise PermanentError(text) from exc
        credentials = Credentials(cluster=answer.cluster, credential=answer.credential, server=server)
        try:
            if answer.jwt:
                self._save_nats_creds(answer.jwt, seed)
            path = creds_store.save(self.settings.state_path, credentials)
        except OSError as exc:
            raise PermanentError(
                f"the cluster {answer.cluster!r} was connected, but its credential cannot be saved ({exc}); "
                f"disconnect it ('tether cluster disconnect {answer.cluster}') and connect it again"
            ) from exc
        logger.info("cluster %r connected to the platform; credentials saved in %s", answer.cluster, path)
        return credentials

    async def _hello(self) -> None:
        """Present the credential; PermanentError (cause: the service's error) when refused."""
        assert self._credentials is not None
        health = await self._current_health()
        message = AgentHello(
            cluster=self._credentials.cluster,
            credential=self._credentials.credential,
            cluster_uid=self._cluster_uid,
            agent_version=VERSION,
            kubernetes_version=health.kubernetes_version,
            driver=self.driver.name,
        )
        try:
            welcome = await self._call(
                "saying hello to the platform",
                subjects.agent_call(subjects.Registry.AGENT_HELLO, self._credentials.cluster),
                message,
                AgentWelcome,
                timeout=max(PATIENT_TIMEOUT, self.settings.request_timeout),
            )
        except TetherError as exc:
            text = exc.description
            if isinstance(exc, Unauthenticated | NotFound):
                text = f"{text}; {_reconnect_hint(self._credentials.cluster)}"
            raise PermanentError(text) from exc
        self._apply_welcome(welcome)

    def _apply_welcome(self, welcome: AgentWelcome) -> None:
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
        if interval != self._interval:
            logger.info("heartbeat every %gs", interval)
        self._interval = interval
        logger.info("platform welcomed cluster %r", welcome.cluster)

    # --- running --------------------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._heartbeats(), name="agent-heartbeat")
                tg.create_task(self._hellos(), name="agent-hello")
                tg.create_task(self._control_notices(), name="agent-control")
                tg.create_task(self._commands(), name="agent-commands")
                tg.create_task(self._inventory(), name="agent-inventory")
                tg.create_task(self._renewals(), name="agent-renew")
                tg.create_task(self._watch_refusal(), name="agent-refusal")
                if self._gateway is not None:
                    tg.create_task(self._gateway.serve(), name="agent-gateway")
                if self._statuses is not None:
                    tg.create_task(self._report_statuses(self._statuses), name="agent-status")
        except BaseExceptionGroup as group:
            leaves = _leaves(group)
            primary = next((e for e in leaves if isinstance(e, PermanentError)), leaves[0])
            for other in leaves:
                if other is not primary and not isinstance(other, asyncio.CancelledError):
                    logger.error("agent task failed too: %r", other)
            raise primary from None

    async def _heartbeats(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self._interval
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._beat_now.wait()
            self._beat_now.clear()
            self.metrics.heartbeat_lag.record(max(0.0, loop.time() - next_at))
            await self._beat()
            next_at = loop.time() + self._interval

    async def _beat(self) -> None:
        """Publish one heartbeat; never raises for a link or cluster problem."""
        conn = self.connection
        if not conn.is_connected:
            # Heartbeats buffered through an outage carry nothing (presence uses the
            # platform's clock); a fresh one follows the hello after the reconnect.
            logger.debug("link down; heartbeat skipped")
            return
        health = await self._current_health()
        if len(health.control_planes) > MAX_OBJECTS:
            # The platform refuses a heartbeat over its bounds whole: report the first ones, stay online.
            health = msgspec.structs.replace(health, control_planes=health.control_planes[:MAX_OBJECTS])
        self._seq += 1
        beat = Heartbeat(cluster=self.cluster, session=self.session, seq=self._seq, sent_at=time.time(), health=health)
        try:
            await conn.publish(subjects.heartbeat(self.cluster), beat)
        except Unavailable as exc:
            logger.warning("heartbeat %d not sent: %s", self._seq, exc.description)

    async def _current_health(self) -> ClusterHealth:
        """The driver's health now; the last known one marked unreachable when the driver fails."""
        try:
            health = await self.driver.health()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._api_ok:
                logger.warning("cannot read the cluster's health: %s", exc)
            self._api_ok = False
            return msgspec.structs.replace(self._health, api_reachable=False)
        if not self._api_ok:
            logger.info("the cluster's API is reachable again")
        self._api_ok = True
        self._health = health
        return health

    async def _hellos(self) -> None:
        """Say hello again after every reconnect; a refusal stops the agent."""
        while True:
            await self._reconnected.wait()
            self._reconnected.clear()
            await self._hello()
            self._beat_now.set()
            self._inventory_now.set()

    async def _control_notices(self) -> None:
        assert self._control is not None
        async for incoming in self._control:
            try:
                notice = decode(incoming.data, ControlNotice)
            except TetherError as exc:
                logger.warning("ignoring a control notice on %s: %s", incoming.subject, exc.description)
                continue
            if notice.kind == "revoked":
                reason = notice.reason or f"cluster {self.cluster!r} was disconnected from the platform"
                logger.error("the platform revoked this agent: %s", reason)
                raise PermanentError(f"{reason}; {_reconnect_hint(self.cluster)}")

    async def _commands(self) -> None:
        """This cluster's commands, one at a time, until the agent stops."""
        assert self._queue is not None and self._applier is not None
        queue, applier = self._queue, self._applier
        while not self._stopping.is_set():
            delivery = await queue.next()
            if delivery is None:
                continue
            if self._stopping.is_set():
                # Fetched as the stop began: leave it for the next start, at once.
                with contextlib.suppress(Unavailable):
                    await delivery.nak()
                return
            # Its own task, shielded: an orderly stop lets the apply and its result finish.
            self._in_flight = asyncio.create_task(applier.handle(delivery), name="agent-command-apply")
            try:
                await asyncio.shield(self._in_flight)
            finally:
                if self._in_flight.done():
                    self._in_flight = None

    async def _publish_result(self, subject: str, result: CommandResult, msg_id: str) -> None:
        await self.connection.js_publish(subject, result, msg_id=msg_id, timeout=PUBLISH_TIMEOUT)
        if self._statuses is not None:
            self._statuses.note(result)

    async def _publish_status(self, subject: str, result: CommandResult, msg_id: str) -> None:
        await self.connection.js_publish(subject, result, msg_id=msg_id, timeout=PUBLISH_TIMEOUT)

    async def _report_statuses(self, reporter: StatusReporter) -> None:
        """Every few seconds: what settled since (a tenant became Ready, a namespace is gone) goes to the platform."""
        every = min(self._interval, STATUS_INTERVAL)
        while True:
            await asyncio.sleep(every)
            if not self.connection.is_connected:
                continue
            try:
                await reporter.check()
            except asyncio.CancelledError:
                raise
            except DriverError as exc:
                logger.debug("cannot read the workloads' status: %s", exc)
            except Exception:
                logger.exception("the %s driver failed to report its workloads' status", self.driver.name)

    async def _inventory(self) -> None:
        """Report the inventory after every (re)connect and every ``inventory_interval`` seconds."""
        while True:
            reason: Literal["connect", "periodic"] = "periodic"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.inventory_interval):
                    await self._inventory_now.wait()
                reason = "connect"
            self._inventory_now.clear()
            await self._send_inventory(reason)

    async def _send_inventory(self, reason: Literal["connect", "periodic"]) -> None:
        """Publish one inventory, retrying until it lands, a newer one is due, or the interval passed."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + self.settings.inventory_interval
        self._inventories += 1
        msg_id = f"inventory-{self.session}-{self._inventories}"
        subject = subjects.evt(self.cluster, subjects.EVT_INVENTORY)
        base, cap = INVENTORY_BACKOFF
        attempt = 0
        while True:
            try:
                items = await self.driver.inventory()
            except DriverError as exc:
                logger.warning("cannot read the inventory (%s); it is reported once the cluster answers", exc)
                return
            except Exception:
                logger.exception("the %s driver failed to list its inventory", self.driver.name)
                return
            if len(items) > MAX_OBJECTS:
                logger.error(
                    "%d objects, over the %d one inventory may hold: reporting the first %d",
                    len(items),
                    MAX_OBJECTS,
                    MAX_OBJECTS,
                )
                items = items[:MAX_OBJECTS]
            message = Inventory(cluster=self.cluster, items=items, at=time.time(), reason=reason)
            try:
                await self.connection.js_publish(subject, message, msg_id=msg_id, timeout=PATIENT_TIMEOUT)
            except Unavailable as exc:
                delay = backoff_delay(attempt, base=base, cap=cap)
                attempt += 1
                if attempt == 1:
                    logger.warning("inventory not published: %s; retrying", exc.description)
                if loop.time() + delay > give_up_at:
                    return
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._inventory_now.wait()
                if self._inventory_now.is_set():
                    return  # a fresh one follows at once
                continue
            logger.info("inventory reported (%s, %d objects)", reason, len(items))
            return

    # --- shutdown -------------------------------------------------------------------------------
    async def _finish_in_flight(self) -> None:
        """Let the command being applied finish (apply, result, ack), for up to ``shutdown_timeout``."""
        task = self._in_flight
        if task is None or task.done():
            return
        logger.info("stopping: finishing the command being applied")
        done, _ = await asyncio.wait({task}, timeout=self.settings.shutdown_timeout)
        if not done:
            logger.warning(
                "stopping: the command being applied did not finish within %gs; it will be delivered again",
                self.settings.shutdown_timeout,
            )
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            logger.error("the command being applied failed: %r", task.exception())

    async def _shutdown(self) -> None:
        self._stopping.set()
        await self._finish_in_flight()
        main = self._main
        if main is not None:
            if not main.done():
                main.cancel()
            await asyncio.wait({main})
            if not main.cancelled():
                main.exception()  # reported by wait(); do not let asyncio warn it was never retrieved
        # The main task may have ended on its own (revoked) with a command still in flight.
        await self._finish_in_flight()
        if self._queue is not None:
            await self._quietly("stop fetching commands", self._queue.close)
        if self._control is not None:
            await self._quietly("unsubscribe from control notices", self._control.unsubscribe)
        if self._gateway is not None:
            await self._quietly("stop the gateway", self._gateway.close)
        if self._conn is not None:
            conn, timeout = self._conn, self.settings.shutdown_timeout
            await self._quietly("close the NATS connection", lambda: conn.close(timeout))
        if self._driver is not None and self._owns_driver:
            await self._quietly("close the driver", self._driver.close)
        self._lock.release()
        if main is not None:
            logger.info("agent stopped")

    @staticmethod
    async def _quietly(what: str, step: Callable[[], Awaitable[None]]) -> None:
        try:
            await step()
        except Exception:
            logger.exception("while stopping: cannot %s", what)


async def run(
    settings: AgentSettings, *, ready: asyncio.Event | None = None, tracer_provider: TracerProvider | None = None
) -> None:
    """Run one agent until cancelled; raises PermanentError when it cannot go on."""
    provider = tracer_provider or make_tracer_provider(settings.token_cluster or "")
    try:
        async with Agent(settings, tracer_provider=provider) as agent:
            if ready is not None:
                ready.set()
            await agent.wait()
    finally:
        if tracer_provider is None:
            provider.shutdown()
