"""Registry handlers and ``run``: thin glue between the bus and ``logic``."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import secrets
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Unpack

from opentelemetry.metrics import Observation

from schemas import subjects
from schemas.credentials import parse_connect_token
from schemas.errors import Conflict, NotFound, TetherError
from schemas.messages import (
    AGENT_PROTOCOL,
    AgentBootstrap,
    AgentCredentials,
    AgentHello,
    AgentRenew,
    AgentWelcome,
    ClusterConnectInfo,
    ClusterCreate,
    ClusterEvent,
    ClusterList,
    ClusterRecord,
    ClusterUidClaim,
    ControlNotice,
    Empty,
    EventsCredsRequest,
    NameRequest,
    NamesRequest,
    ProjectCreate,
    ProjectRecord,
    WorkloadRecord,
)
from schemas.names import check_name
from schemas.ratelimit import RateLimiter
from services.bus import Bus, Endpoints, Options, Records, Runtime, View, limits, serve
from services.bus.admission import AdmissionLimits
from services.bus.identity import Trust
from services.bus.patience import until_done
from services.bus.settings import FromEnv, ServiceSettings, env
from services.registry import logic
from services.registry.changes import REMOVED_PREFIX, Changes, live
from services.registry.consumers import NewConsumers
from services.registry.projects import Projects
from services.registry.revocations import AccountPush
from services.registry.signing import EventsReaders, agent_user_jwt, bootstrap_user_jwt
from services.registry.steps import Steps
from services.registry.sweep import sweep_consumers
from services.registry.uids import UidClaims
from services.registry.wake import FleetWake

logger = logging.getLogger(__name__)

CONSUMER_ASK_EVERY = 10.0
"""Seconds between the JetStream requests (a look-up, or a creation) one cluster's hellos may cost, past a burst
of ``CONSUMER_ASK_BURST``. An agent asks once after a restart or a lost consumer; one that says hello in a loop,
not bound or its consumer gone, would otherwise hold the look-ups every other agent's recovery waits for.
Beyond it the hello is still answered, naming the consumer: if it really is gone the agent's next fetch says
so at once, and it asks again."""
CONSUMER_ASK_BURST = 3.0


@dataclass(frozen=True)
class Settings(FromEnv):
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    heartbeat_interval: float = env("TETHER_HEARTBEAT_INTERVAL", 5.0)
    """Seconds between agent heartbeats, told to each agent when it connects."""

    auth_dir: Path | None = env("TETHER_AUTH_DIR", None)
    """The platform's NATS trust (``tether up`` makes it): with it, every agent gets its own NATS user
    allowed only its cluster's subjects, and disconnecting revokes it in the broker. None: an open NATS."""

    agent_credential_ttl: float = env("TETHER_AGENT_CRED_TTL", 24 * 3600.0)
    """Lifetime of an agent's NATS user JWT; agents renew at about three quarters of it."""

    admission_concurrency: int = env("TETHER_ADMISSION_CONCURRENCY", 64)
    """Agents' bootstraps handled at once (hellos: ``hello_concurrency``); beyond them a bounded queue. A
    bootstrap waits on three fsynced writes in turn (the UID claim, the token's spending, the event), so how
    many run at once sets the rate: 10,000 agents connecting together were served at ~250/s with 32 (all
    online in 42.4 s), ~270/s with 64 (38.2 s), ~290/s with 128 (35.2 s; each write then waited 80-160 ms:
    nats-server's fsyncs were the limit, and commands written meanwhile would wait as long)."""

    hello_concurrency: int = env("TETHER_HELLO_CONCURRENCY", 256)
    """Agents' hellos handled at once. A hello is a read (its cluster's record), not the bootstrap's three
    fsynced writes; the JetStream look-up of its consumer, when the agent says it is not bound, stays bounded
    at ``admission_concurrency``. Its handling is latency-bound: after a restart of NATS its record read took
    50 ms on average (p99 up to 1 s) on a server busy with 10,000 reconnects, so 32 at a time served a few
    hundred a second and told 6,324 of 10,000 agents to come back up to 90 s later."""

    hello_first_retry_after: float = env("TETHER_HELLO_FIRST_RETRY_AFTER", 4.0)
    """Seconds at most a refused hello is told to wait early in an overload; the limit doubles for each whole
    length of it the registry goes on refusing, up to ``hello_max_retry_after`` (``services.bus.admission``).
    The appointments are spaced at the rate the hellos are served when the agent is refused. After a restart
    of NATS that is the slowest moment (every consumer made again): with 120 s from the start, restarts of
    10,000 agents on two cores took 49.9-100.8 s (nine runs), with 4 s for good 47.4-73.5 s (ten). But 4 s for
    good told a fleet the registry serves slower than that the same 4 s again and again: on one core 60,405-
    67,629 refusals, 212-227 s, 3,542-4,521 clusters shown offline meanwhile; growing, 31,173, 157.6 s and
    1,142 (one run), and 64.6 and 66.2 s on two cores (issue 17, thirty-fifth stop)."""

    hello_max_retry_after: float = env("TETHER_HELLO_MAX_RETRY_AFTER", 120.0)
    """Seconds at most a refused hello is told to wait, however long an overload lasts."""

    admission_queue: int = env("TETHER_ADMISSION_QUEUE", 512)
    """Bootstraps (and hellos) waiting at most; more are told when to come back (retry-after)."""

    admission_max_wait: float = env("TETHER_ADMISSION_MAX_WAIT", 2.0)
    """Seconds a queued bootstrap or hello may be expected to wait: well under the agents' 5 s timeout."""

    consumer_creations: int = env("TETHER_CONSUMER_CREATIONS", 32)
    """New clusters' command consumers created at once, at their registration or beside their bootstraps (a
    bootstrap waits for a free slot, so creations never run ahead of JetStream), and hellos' look-ups of
    their consumer at once: JetStream API requests, which its API queue serves one at a time."""

    consumer_sweep_delay: float = env("TETHER_CONSUMER_SWEEP_DELAY", 120.0)
    """Seconds after its start before the registry lists the agents' consumers and makes again those of an
    earlier version's config (``sweep``); negative: never."""

    consumer_sweep_rate: float = env("TETHER_CONSUMER_SWEEP_RATE", 20.0)
    """JetStream API requests a second of that sweep: its listing's pages (256 consumers each), then the
    consumers it makes again."""

    @property
    def admission(self) -> AdmissionLimits:
        return AdmissionLimits(self.admission_concurrency, self.admission_queue, self.admission_max_wait)

    @property
    def hello_admission(self) -> AdmissionLimits:
        return AdmissionLimits(
            self.hello_concurrency,
            self.admission_queue,
            self.admission_max_wait,
            max_retry_after=self.hello_max_retry_after,
            first_retry_after=min(self.hello_first_retry_after, self.hello_max_retry_after),
        )


def credential_key(trust: Trust | None) -> bytes:
    """The registry's key for agents' credentials: from the platform's account seed (stable across restarts);
    on an open NATS, where there is none, a key of this process (a retry after a restart then writes a new
    credential's hash)."""
    if trust is None:
        return secrets.token_bytes(32)
    return hashlib.sha256(b"tether agent credential\0" + trust.account.encode()).digest()


class Registry:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        clusters: Records[ClusterRecord],
        uids: Records[ClusterUidClaim],
        projects: Records[ProjectRecord],
        trust: Trust | None = None,
        sys_bus: Bus | None = None,
        steps: Steps | None = None,
    ) -> None:
        self.projects = projects
        self.steps = steps or Steps()
        self.trust = trust
        self.settings = settings
        self.bus = bus
        self.clusters = clusters
        self.uid_claims = UidClaims(uids, clusters)
        self.account = AccountPush(trust, sys_bus, clusters)
        """Revokes disconnected agents in the broker (``AccountPush``)."""
        self.credential_key = credential_key(trust)
        """Agents' credentials are derived with it (``logic.agent_credential``): a retry gets the same one."""
        self.new_consumers = NewConsumers(bus, settings.consumer_creations, self.steps)
        """Command consumers made at registration (or, failing that, beside the bootstrap): the first hello
        trusts the one made here, or waits for its creation, and does not look it up (``NewConsumers``)."""
        self._consumer_asks = RateLimiter(rate=1.0 / CONSUMER_ASK_EVERY, burst=CONSUMER_ASK_BURST)
        """Each cluster's hellos cost JetStream a consumer request at most this often (``CONSUMER_ASK_EVERY``)."""
        self._look_ups = asyncio.Semaphore(settings.consumer_creations)
        """Hellos' look-ups of their consumer (JetStream API requests) at once, however many hellos and
        bootstraps are admitted (``Settings.hello_concurrency``, ``admission_concurrency``)."""
        self.kept: View[ClusterRecord] | None = None
        """The cluster records kept in the process once loaded (``keep_clusters``): the list reads them."""
        self.wake: FleetWake | None = None
        """Tells the connected clusters' agents at start that hellos are heard now (``wake``)."""

    def connected_clusters(self) -> list[str]:
        """The clusters whose agent identity is live, as kept."""
        return [r.name for r in self.kept.values() if r.state == "connected"] if self.kept is not None else []

    async def _record(self, name: str) -> tuple[ClusterRecord, int]:
        check_name(name, "cluster name")
        found = await self.clusters.get(name)
        if found is None:
            raise NotFound(f"cluster {name!r} not found")
        return found

    async def _event(self, kind: str, cluster: str, reason: str = "") -> None:
        event = ClusterEvent(kind=kind, cluster=cluster, at=time.time(), reason=reason)  # type: ignore[arg-type]
        # Retried through leader elections; the id makes a retry after a lost ack harmless.
        await self.bus.publish(subjects.public_event(f"cluster.{kind}"), event, msg_id=f"{kind}-{cluster}-{event.at}")

    async def create(self, req: ClusterCreate) -> ClusterConnectInfo:
        logic.validate_create(req)
        token = ""

        def change(existing: ClusterRecord | None) -> ClusterRecord:
            nonlocal token
            record, token = logic.register(req, existing, time.time())
            return record

        record = await self.clusters.mutate(req.name, change)
        assert record is not None
        if self.trust is not None:
            # The token carries a bootstrap NATS user, derived from its secret, good for one call.
            token = f"{token}.{bootstrap_user_jwt(self.trust, record, token)}"
        # Its command consumer now, not in its agent's connect (``NewConsumers``), beside the event's write.
        await asyncio.gather(self.new_consumers.at_registration(record.name), self._event("registered", record.name))
        return ClusterConnectInfo(cluster=record, token=token, expires_at=record.token_expires_at)

    async def renew(self, req: AgentRenew, caller: str) -> AgentCredentials:
        logic.check_caller(caller, req.cluster)
        record, _ = await self._record(req.cluster)
        logic.check_renewal(record, req)
        if self.trust is None or not record.nats_user:
            return AgentCredentials(cluster=record.name, credential="")
        jwt, expires = agent_user_jwt(self.trust, record.name, record.nats_user, self.settings.agent_credential_ttl)
        return AgentCredentials(cluster=record.name, credential="", jwt=jwt, expires_at=expires)

    async def get(self, req: NameRequest) -> ClusterRecord:
        record, _ = await self._record(req.name)
        return record

    async def list(self, _req: Empty) -> ClusterList:
        # Every create that names no cluster lists them for placement: from the kept records (waiting only
        # for writes acknowledged before the call), not a read of the whole bucket (10,000 deliveries each).
        if self.kept is not None:
            await self.kept.caught_up()
            found = self.kept.values()
        else:
            found = live(await self.clusters.items())
        return ClusterList(clusters=sorted(found, key=lambda r: r.name))

    async def disconnect(self, req: NameRequest) -> ClusterRecord:
        record, revision = await self._record(req.name)
        updated = logic.disconnect(record, time.time())
        if updated is not record:
            await self.clusters.update(record.name, updated, revision)
            if record.cluster_uid:
                await self.uid_claims.release(record.cluster_uid, record.name)
            await self.bus.send(
                subjects.control(record.name),
                ControlNotice(kind="revoked", reason=f"cluster {record.name!r} was disconnected"),
            )
            await self._event("disconnected", record.name)
        # Also when already disconnected (a crash before it is repaired by asking again). A creation still
        # running from the bootstrap ends first, so it cannot bring the consumer back after the delete.
        await self.new_consumers.settled(record.name)
        await self.bus.delete_agent_consumer(record.name)
        # Also when already disconnected: a crash before the push is repaired by asking again.
        await self.account.push()
        return updated

    async def bootstrap(self, req: AgentBootstrap, caller: str) -> AgentCredentials:
        name, _secret, _jwt = parse_connect_token(req.token)
        logic.check_caller(caller, name)
        logic.check_cluster_uid(req.cluster_uid)
        if self.trust is not None:
            logic.check_user_key(req.user_public_key)
        with self.steps.timed("record"):
            record, revision = await self._record(name)
        credential = None
        if record.state != "connected":
            credential = await self._spend(record, revision, req)
            if credential is None:
                # Spent meanwhile by a racing request, perhaps this agent's own retry: answered below if so.
                record, revision = await self._record(name)
        if credential is None:
            credential = await self._answer_again(record, revision, req)
        # The first hello's answer too, when its consumer was made at registration: the hello would only check
        # the credential just issued and trust that consumer (``hello``). Only for an agent of this protocol: an
        # older one says hello (its consumer then looked up), which is where it is told to upgrade if it must.
        welcome = None
        if req.protocol >= AGENT_PROTOCOL and self.new_consumers.made_at_registration(name):
            welcome = self._welcome(name, consumer=True)
        if self.trust is None:
            return AgentCredentials(cluster=name, credential=credential, welcome=welcome)
        with self.steps.timed("sign jwt"):
            jwt, expires = agent_user_jwt(self.trust, name, req.user_public_key, self.settings.agent_credential_ttl)
        return AgentCredentials(cluster=name, credential=credential, jwt=jwt, expires_at=expires, welcome=welcome)

    def _welcome(self, name: str, *, consumer: bool) -> AgentWelcome:
        return AgentWelcome(
            cluster=name,
            heartbeat_interval=self.settings.heartbeat_interval,
            consumer=subjects.agent_consumer(name) if consumer else "",
            unheard_backoff=logic.unheard_backoff(len(self.kept) if self.kept is not None else 0),
        )

    async def _spend(self, record: ClusterRecord, revision: int, req: AgentBootstrap) -> str | None:
        """Spend the token (a CAS on the record: of two racing requests, one wins); the credential, or None
        when another request spent it first."""
        name, steps = record.name, self.steps
        connected, credential = logic.redeem(record, req, time.time(), self.credential_key)
        with steps.timed("uid claim"):
            created = await self.uid_claims.claim(req.cluster_uid, name)
        with steps.timed("spend token"):
            try:
                await self.clusters.update(name, connected, revision)
            except Conflict:
                if created:
                    await self.uid_claims.release(req.cluster_uid, name)
                return None
        # The consumer is created meanwhile (``NewConsumers``): the agent needs it only after its hello. The
        # event is stored while the bootstrap waits for a free creation slot, not after it (both before the
        # answer, as before).
        with steps.timed("consumer slot + event"):
            await asyncio.gather(
                steps.awaited("consumer slot", self.new_consumers.start(name)),
                steps.awaited("event", self._event("connected", name)),
            )
        logger.info("cluster %s connected (uid %s)", name, req.cluster_uid)
        return credential

    async def _answer_again(self, record: ClusterRecord, revision: int, req: AgentBootstrap) -> str:
        """The same agent asking again (its first answer lost): the same credential, a JWT for the same key,
        nothing written; anyone else is refused as before (``logic.redeem_again``)."""
        changed, credential = logic.redeem_again(record, req, time.time(), self.credential_key)
        if changed is not None:
            await self.clusters.update(record.name, changed, revision)
        logger.info("cluster %s: its agent asked to bootstrap again; answered again", record.name)
        return credential

    def _welcome_as_kept(self, req: AgentHello) -> bool:
        """Whether the kept records alone admit ``req`` with nothing to write (a reconnect: same credential,
        cluster and versions). After a restart of NATS 10,000 agents say hello at once, and a read of each
        record on the busy server took 190 ms on average, 2.5 s at p99, and made the hellos the restart's
        longest step. A record the kept ones do not show connected, or show otherwise, is read from the bucket
        before anything is refused or written: a refusal or a change is never decided on a copy. A credential
        revoked a moment ago on another replica can still be welcomed here for those milliseconds, as it could
        between a read and the revocation's write before; NATS refuses that credential itself once revoked."""
        kept = self.kept.get(req.cluster) if self.kept is not None else None
        if kept is None:
            return False
        try:
            return logic.admit(kept, req) == kept
        except TetherError:
            return False

    async def hello(self, req: AgentHello, caller: str) -> AgentWelcome:
        logic.check_caller(caller, req.cluster)
        check_name(req.cluster, "cluster name")
        if self.wake is not None:
            self.wake.heard(req.cluster)
        if not self._welcome_as_kept(req):
            with self.steps.timed("hello: record"):
                record, revision = await self._record(req.cluster)
            admitted = logic.admit(record, req)
            if admitted != record:
                with self.steps.timed("hello: record update"):
                    await self.clusters.update(record.name, admitted, revision)
        # Also at every hello: a consumer lost with its stream comes back when its agent reconnects. Not at the
        # first hello after the bootstrap whose creation made it (an agent whose fetch finds the consumer
        # missing looks it up and asks again with a hello).
        # Not when the agent says it is bound and fetching (a hello after a reconnect): after a restart of NATS
        # 10,000 such look-ups queued on JetStream's API for nothing.
        if req.consumer_bound:
            return self._welcome(req.cluster, consumer=False)
        with self.steps.timed("hello: consumer (creation awaited, or looked up)"):
            fresh = await self.new_consumers.settled(req.cluster)
            if not fresh and self._consumer_asks.allow(req.cluster, time.monotonic()):
                async with self._look_ups:
                    # Gone (a lone NATS server's restart loses every agent's consumer): made without a look-up.
                    await self.bus.ensure_agent_consumer(req.cluster, look_up=not req.consumer_gone)
        # Named in the answer: the agent binds to it without a look-up of its own (one JetStream API request
        # fewer per connect; the longest wait of 10,000 agents connecting, p50 4 s, was that look-up).
        return self._welcome(req.cluster, consumer=True)


def install(registry: Registry, served: Endpoints) -> None:
    R = subjects.Registry
    served.platform(R.CLUSTER_CREATE, ClusterCreate, registry.create)
    served.platform(R.CLUSTER_GET, NameRequest, registry.get)
    served.platform(R.CLUSTER_LIST, Empty, registry.list)
    served.platform(R.CLUSTER_DISCONNECT, NameRequest, registry.disconnect)
    # Called by agents (and connect tokens' bootstrap users): the cluster is the one in the subject.
    # Connects are admitted at the rate the registry serves them, each endpoint its own queue (reconnecting
    # agents' hellos do not wait behind new clusters' bootstraps); renewals are rare and never refused.
    admission = registry.settings.admission
    served.agent(R.AGENT_BOOTSTRAP, AgentBootstrap, registry.bootstrap, admission)
    served.agent(R.AGENT_HELLO, AgentHello, registry.hello, registry.settings.hello_admission)
    served.agent(R.AGENT_RENEW, AgentRenew, registry.renew)
    served.platform(R.EVENTS_CREDS, EventsCredsRequest, EventsReaders(registry.trust).creds)
    projects = Projects(registry.projects, registry.clusters)
    served.platform(subjects.Projects.CREATE, ProjectCreate, projects.create)
    served.platform(subjects.Projects.GET, NameRequest, projects.get)
    served.platform(subjects.Projects.LIST, NamesRequest, projects.list)
    Changes(registry).install(served)


async def keep_clusters(rt: Runtime, registry: Registry) -> None:
    """The cluster records kept in the process (``Records.view``) for hellos, the list and the
    ``tether.clusters.connected`` gauge (counted when it is collected). A read of every record each 10 s
    delivered them all to the registry again (at 10,000 clusters a 10,000-delivery burst every ~10.5 s, which
    the slowest commands of the benchmark followed).

    Loaded before the endpoints are served. Served first, a restarted registry met 10,000 reconnected agents'
    hellos with no records kept: each hello read its record from the busy server (432 of them, 1.7 s each),
    and the hellos' admission, sizing its appointments by those reads, told thousands of agents to come back
    tens of seconds later (the last hello 31 s after the registry answered, at ~5 % of one core)."""
    clusters = registry.clusters
    rt.meter("tether.registry").create_observable_gauge(
        "tether.clusters.connected",
        callbacks=[
            lambda _o: (
                [Observation(sum(r.state == "connected" for r in registry.kept.values()))]
                if registry.kept is not None
                else []
            )
        ],
        description="Clusters with a connected agent identity",
    )
    began = time.monotonic()
    view = await until_done(
        "loading the cluster records", lambda: clusters.view(lambda key, _record: not key.startswith(REMOVED_PREFIX))
    )
    rt.on_stop(view.stop)
    registry.kept = view
    logger.info("%d cluster records loaded in %.1fs", len(view), time.monotonic() - began)


async def setup(rt: Runtime, settings: Settings) -> None:
    # Declared (and the system account's connection made) at once, not one after another: a restarted
    # platform's services wait on a server busy with its fleet's reconnects, each step for seconds. The
    # registry creates each agent's consumer on the desired state's stream: it declares the bucket too (as
    # lifecycle does, same config), so agents are served whichever of the two starts first. It never writes it.
    trust = Trust.load(settings.auth_dir) if settings.auth_dir is not None else None

    async def system_bus() -> Bus | None:
        if settings.auth_dir is None:
            return None
        sys_creds = str(settings.auth_dir / "sys.creds")
        return await rt.connect("registry-sys", replace(settings.common.bus, creds_file=sys_creds))

    async def desired_buckets() -> None:
        # Agents' consumers are made on them (lifecycle writes them; whichever starts first creates them).
        await asyncio.gather(
            *(rt.bus.bucket(b, WorkloadRecord, history=limits.DESIRED_HISTORY) for b in subjects.DESIRED_BUCKETS)
        )

    _, _, clusters, uids, projects, sys_bus = await asyncio.gather(
        rt.bus.declare_streams("platform"),
        desired_buckets(),
        rt.bus.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord, history=5),
        rt.bus.bucket(subjects.BUCKET_CLUSTER_UIDS, ClusterUidClaim),
        rt.bus.bucket(subjects.BUCKET_PROJECTS, ProjectRecord, history=5),
        system_bus(),
    )
    steps = Steps(rt.meter("tether.registry"))
    registry = Registry(settings, rt.bus, clusters, uids, projects, trust, sys_bus, steps)
    rt.on_stop(registry.new_consumers.close)
    await keep_clusters(rt, registry)
    registry.wake = FleetWake(rt.bus, registry.connected_clusters)
    rt.task("wake", registry.wake.run)  # tasks start once the endpoints are served
    # Beside the endpoints, not before them: the push reads every record from the bucket (removed clusters too,
    # which the kept records leave out) while a restarted platform's agents wait for their hellos. The server
    # keeps the last pushed account in its resolver across restarts, so this push only makes sure of it; a push
    # of a disconnect meanwhile is not undone by it (``AccountPush``).
    rt.task("revocations", registry.account.push_at_start)
    if settings.consumer_sweep_delay >= 0:

        async def consumer_sweep() -> None:  # returns when done; the service serves on
            rate = max(0.1, settings.consumer_sweep_rate)
            await sweep_consumers(rt.bus, registry.connected_clusters, delay=settings.consumer_sweep_delay, rate=rate)

        rt.task("consumer-sweep", consumer_sweep)
    install(registry, rt.endpoints)


async def run(settings: Settings, **options: Unpack[Options]) -> None:
    await serve("registry", settings.common, functools.partial(setup, settings=settings), **options)
