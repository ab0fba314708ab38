"""Health handlers and ``run``.

Every replica subscribes to all heartbeats (no queue group), so each has the
whole fleet's presence in memory and answers reads from it. Transitions are
written to KV with compare-and-set: of two replicas, exactly one wins and
publishes the public event. Last-seen times are flushed in batches, so a
restarted replica starts from at most one flush interval behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from opentelemetry.metrics import Histogram

from schemas import subjects
from schemas.errors import Conflict, NotFound, TetherError
from schemas.messages import (
    ClusterEvent,
    Empty,
    Heartbeat,
    NameRequest,
    Presence,
    PresenceList,
    decode,
)
from services import VERSION
from services.bus import (
    Bucket,
    Connection,
    JetStream,
    Msg,
    ServiceHost,
    Telemetry,
    close,
    connect,
    ensure_bucket,
    ensure_platform_streams,
)
from services.bus.publishing import publish
from services.bus.settings import ServiceSettings
from services.health import logic

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    offline_after: float = 12.0
    """Seconds without a heartbeat before a cluster is offline (budget: shown within 15 s)."""

    sweep_interval: float = 1.0
    """Seconds between checks for silent clusters."""

    flush_interval: float = 2.0
    """Seconds between batched writes of presence to KV."""

    seen_write_interval: float = 60.0
    """Seconds a cluster's stored last-seen time may fall behind before a flush writes it (a new health
    report or session is written at the next flush regardless). Nothing judges from the stored time: every
    replica hears every heartbeat, and a restarted one counts silence from its own start. Writing every
    heartbeat's time was 5,000 KV writes/s at 10,000 clusters, and delayed heartbeats behind them."""

    heartbeat_rate: float = 10.0
    """Heartbeats a second one cluster may send (agents send one every few seconds); the rest are dropped
    unread, so one agent's flood cannot delay every other cluster's heartbeats."""

    heartbeat_burst: float = 50.0

    pending_limit: int = 200_000
    """Heartbeats waiting in health's inbox before NATS' client drops some (a slow consumer). Past a tenth
    of it, health holds its judgement of silent clusters (``logic.hold_judgement``)."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=ServiceSettings.from_env(),
            heartbeat_rate=float(os.environ.get("TETHER_HEARTBEAT_RATE", "10")),
            pending_limit=int(os.environ.get("TETHER_HEARTBEAT_PENDING_LIMIT", "200000")),
            offline_after=float(os.environ.get("TETHER_OFFLINE_AFTER", "12")),
            sweep_interval=float(os.environ.get("TETHER_SWEEP_INTERVAL", "1")),
            flush_interval=float(os.environ.get("TETHER_FLUSH_INTERVAL", "2")),
            seen_write_interval=float(os.environ.get("TETHER_SEEN_WRITE_INTERVAL", "60")),
        )


class HealthMonitor:
    def __init__(self, settings: Settings, js: JetStream, presence: Bucket[Presence]) -> None:
        self.settings = settings
        self.js = js
        self.bucket = presence
        self.presence: dict[str, Presence] = {}
        self.dirty: set[str] = set()
        self.written: dict[str, tuple[Presence, int]] = {}
        """What this replica last wrote of a cluster's presence, and its revision. A flush writes on top of
        it (compare-and-set) without reading first: half the KV round trips of 200 heartbeats a second at
        1,000 clusters. Anyone else's write since (a transition, another replica) makes the write fail and
        the next one read first."""
        self.lag: Histogram | None = None
        self.listening_since = time.time()
        """When this replica started hearing heartbeats: silence before it is not counted."""
        self.limiter = logic.RateLimiter(settings.heartbeat_rate, settings.heartbeat_burst)
        self.inbox: Callable[[], tuple[int, int]] | None = None
        """(heartbeats waiting, reconnects so far) of this replica's connection, once subscribed."""
        self._reconnects = 0
        self._holding = False

    async def load(self) -> None:
        self.presence = await self.bucket.items()
        logger.info("loaded presence of %d clusters", len(self.presence))

    async def _publish(self, kind: str, cluster: str, at: float, reason: str = "") -> None:
        event = ClusterEvent(kind=kind, cluster=cluster, at=at, reason=reason)  # type: ignore[arg-type]
        # Retried through a leader election with the same id, so a lost acknowledgement never doubles it.
        await publish(
            self.js, subjects.public_event(f"cluster.{kind}"), event, msg_id=f"cluster-{kind}-{cluster}-{at!r}"
        )

    async def on_heartbeat(self, msg: Msg) -> None:
        # First and cheap: a flooding cluster's surplus is dropped before anything is decoded.
        if not self.limiter.allow(msg.subject, time.monotonic()):
            return
        now = time.time()
        try:
            hb = decode(msg.data, Heartbeat)
            if subjects.cluster_of_heartbeat(msg.subject) != hb.cluster:
                raise TetherError(f"heartbeat for {hb.cluster!r} arrived on {msg.subject!r}")
        except TetherError as exc:
            logger.warning("dropped heartbeat on %s: %s", msg.subject, exc.description)
            return
        if self.lag is not None and hb.sent_at:
            self.lag.record(max(0.0, now - hb.sent_at))
        new, transition = logic.observe(self.presence.get(hb.cluster), hb, now)
        self.presence[hb.cluster] = new
        if transition is None:
            self.dirty.add(hb.cluster)
            return
        await self._transition(new, transition, now)

    async def _transition(self, new: Presence, kind: str, now: float) -> None:
        """Write a transition with CAS; publish the event only if this replica wrote it."""
        wrote = False

        def change(stored: Presence | None) -> Presence | None:
            nonlocal wrote
            if stored is not None and stored.online == new.online:
                wrote = False
                return None  # another replica (or an earlier run) recorded it already
            wrote = True
            return new

        self.written.pop(new.cluster, None)
        try:
            await self.bucket.mutate(new.cluster, change)
        except TetherError as exc:
            logger.warning("could not record %s of %s: %s", kind, new.cluster, exc)
            return
        self.dirty.discard(new.cluster)
        if wrote:
            logger.info("cluster %s is %s", new.cluster, kind)
            await self._publish(kind, new.cluster, now)

    def judging(self, now: float) -> bool:
        """False while this replica cannot trust its own hearing (see ``logic.hold_judgement``); silence is
        then counted from when it can again."""
        for subject, n in self.limiter.take_dropped().items():
            logger.warning("dropped %d heartbeats on %s: over %.0f/s", n, subject, self.settings.heartbeat_rate)
        if self.inbox is None:
            return True
        backlog, reconnects = self.inbox()
        why = logic.hold_judgement(backlog, self.settings.pending_limit, reconnects, self._reconnects)
        self._reconnects = reconnects
        if why is None:
            if self._holding:
                logger.info("judging silent clusters again")
            self._holding = False
            return True
        if not self._holding:
            logger.warning("holding judgement of silent clusters: %s", why)
        self._holding = True
        self.listening_since = now
        return False

    async def sweep_once(self) -> None:
        now = time.time()
        if not self.judging(now):
            return
        for name, current in list(self.presence.items()):
            new, transition = logic.sweep(current, now, self.settings.offline_after, self.listening_since)
            if transition is not None:
                self.presence[name] = new
                await self._transition(new, transition, now)

    async def flush_once(self) -> None:
        dirty, self.dirty = self.dirty, set()
        for name in dirty:
            mine = self.presence.get(name)
            if mine is None:
                continue
            try:
                await self._flush(name, mine)
            except Conflict:
                self.dirty.add(name)  # written by another replica right now: the next flush reads it
            except TetherError as exc:
                logger.warning("could not flush presence of %s: %s", name, exc)
                self.dirty.add(name)

    async def _flush(self, name: str, mine: Presence) -> None:
        last = self.written.pop(name, None)
        if last is not None:
            new = logic.merge_seen(last[0], mine, self.settings.seen_write_interval)
            if new is None:
                self.written[name] = last
                return
            try:
                self.written[name] = (new, await self.bucket.update(name, new, last[1]))
                return
            except Conflict:
                pass  # written by someone else since: read it
        found = await self.bucket.get(name)
        if found is None:
            self.written[name] = (mine, await self.bucket.create(name, mine))
            return
        new = logic.merge_seen(found[0], mine, self.settings.seen_write_interval)
        if new is None:
            self.written[name] = found
            return
        self.written[name] = (new, await self.bucket.update(name, new, found[1]))

    async def on_disconnected(self, msg: Msg) -> None:
        try:
            event = decode(msg.data, ClusterEvent)
        except TetherError as exc:
            logger.warning("dropped event on %s: %s", msg.subject, exc.description)
            return
        current = self.presence.get(event.cluster)
        if current is not None and current.online:
            new = logic.mark_offline(current, time.time(), "Disconnected", "the cluster was disconnected")
            self.presence[event.cluster] = new
            await self._transition(new, "offline", time.time())

    async def on_removed(self, msg: Msg) -> None:
        """A removed cluster leaves no presence behind (in memory or in KV)."""
        try:
            event = decode(msg.data, ClusterEvent)
        except TetherError as exc:
            logger.warning("dropped event on %s: %s", msg.subject, exc.description)
            return
        self.presence.pop(event.cluster, None)
        self.written.pop(event.cluster, None)
        await self.bucket.kv.purge(event.cluster)

    async def every(self, interval: float, step: str) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await (self.sweep_once() if step == "sweep" else self.flush_once())
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("%s failed; will retry", step)

    async def list(self, _req: Empty) -> PresenceList:
        return PresenceList(items=sorted(self.presence.values(), key=lambda p: p.cluster))

    async def get(self, req: NameRequest) -> Presence:
        found = self.presence.get(req.name)
        if found is None:
            raise NotFound(f"no presence for cluster {req.name!r}")
        return found


async def run(settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None) -> None:
    telemetry = telemetry or Telemetry.create("health", settings.common.telemetry)
    nc: Connection = await connect(settings.common.bus, "health")
    try:
        js = nc.jetstream()
        replicas = settings.common.bus.replicas
        await ensure_platform_streams(js, replicas)
        bucket = await ensure_bucket(js, subjects.BUCKET_PRESENCE, Presence, replicas=replicas)
        monitor = HealthMonitor(settings, js, bucket)
        await monitor.load()
        meter = telemetry.meter(__name__)
        monitor.lag = meter.create_histogram(
            "tether.heartbeat.lag",
            unit="s",
            description="Heartbeat arrival (platform clock) minus its sending",
            explicit_bucket_boundaries_advisory=[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
        )
        meter.create_observable_gauge(
            "tether.clusters.online",
            callbacks=[lambda _opts: _gauge(sum(p.online for p in monitor.presence.values()))],
            description="Clusters whose agent is connected",
        )
        hb_sub = await nc.subscribe(
            subjects.HEARTBEAT_ANY,
            cb=monitor.on_heartbeat,
            pending_msgs_limit=settings.pending_limit,
            pending_bytes_limit=256 * 1024 * 1024,
        )
        monitor.inbox = lambda: (hb_sub.pending_msgs, int(nc.stats["reconnects"]))
        monitor.listening_since = time.time()
        ev_sub = await nc.subscribe(subjects.public_event("cluster.disconnected"), cb=monitor.on_disconnected)
        removed_sub = await nc.subscribe(subjects.public_event("cluster.removed"), cb=monitor.on_removed)
        host = ServiceHost(nc, "health", VERSION, telemetry.tracer(__name__))
        host.endpoint(subjects.Health.PRESENCE_LIST, Empty, monitor.list)
        host.endpoint(subjects.Health.PRESENCE_GET, NameRequest, monitor.get)
        async with host, asyncio.TaskGroup() as tg:
            tg.create_task(monitor.every(settings.sweep_interval, "sweep"), name="health-sweep")
            tg.create_task(monitor.every(settings.flush_interval, "flush"), name="health-flush")
            logger.info("health ready (offline after %.1fs)", settings.offline_after)
            if ready:
                ready.set()
            try:
                await asyncio.Event().wait()
            finally:
                await hb_sub.unsubscribe()
                await ev_sub.unsubscribe()
                await removed_sub.unsubscribe()
                await monitor.flush_once()
    finally:
        await close(nc)
        telemetry.shutdown()


def _gauge(value: float) -> list:  # type: ignore[type-arg]
    from opentelemetry.metrics import Observation

    return [Observation(value)]
