"""Health handlers and ``run``.

Every replica subscribes to all heartbeats (no queue group), so each has the
whole fleet's presence in memory and answers reads from it. Transitions are
written to KV with compare-and-set: of two replicas, exactly one wins and
publishes the public event. Last-seen times are flushed in batches, so a
restarted replica starts from at most one flush interval behind.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Unpack

import msgspec
from opentelemetry.metrics import Histogram, Observation

from schemas import subjects
from schemas.errors import Conflict, NotFound, TetherError
from schemas.messages import (
    ClusterEvent,
    Empty,
    Heartbeat,
    NameRequest,
    Presence,
    PresenceList,
)
from schemas.ratelimit import RateLimiter
from services.bus import Bus, Delivery, Options, Records, Runtime, serve, until_done
from services.bus.settings import FromEnv, ServiceSettings, env
from services.health import logic
from services.health.hearing import Lateness
from services.health.transitions import TransitionWriter

logger = logging.getLogger(__name__)

LATE_LOGGED = 1.0
"""Seconds of lateness (``hearing``) worth a log line when the fleet's heartbeats start or stop being that late."""


@dataclass(frozen=True)
class Settings(FromEnv):
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    offline_after: float = env("TETHER_OFFLINE_AFTER", 12.0)
    """Seconds without a heartbeat before a cluster is offline (budget: shown within 15 s)."""

    sweep_interval: float = env("TETHER_SWEEP_INTERVAL", 1.0)
    """Seconds between checks for silent clusters."""

    flush_interval: float = env("TETHER_FLUSH_INTERVAL", 2.0)
    """Seconds between batched writes of presence to KV."""

    seen_write_interval: float = env("TETHER_SEEN_WRITE_INTERVAL", 60.0)
    """Seconds a cluster's stored last-seen time (and its tenants' control planes) may fall behind before a
    flush writes it (a new session or a change of the cluster's own health is written at the next flush
    regardless). Nothing judges from the stored time: every
    replica hears every heartbeat, and a restarted one counts silence from its own start. Writing every
    heartbeat's time was 5,000 KV writes/s at 10,000 clusters, and delayed heartbeats behind them."""

    seen_writes_per_second: float = env("TETHER_SEEN_WRITES_PER_SECOND", 20.0)
    """At most this many writes a second, over the whole fleet, that only move stored last-seen times forward;
    the rest wait for a later flush. A fleet that came online together had its refreshes due together (1,000
    clusters: 1,000 fsynced writes within a few seconds, every minute, beside the commands), and a large fleet's
    grew with it (10,000 clusters: 167 a second, while idle); now each cluster's stored time is refreshed
    every ``seen_write_interval`` or, past that many clusters per ``seen_write_interval``, as the budget
    goes round (10,000 clusters: every ~500 s). A new session or a change of the cluster's own health is
    never held back by it. 0: no limit."""

    heartbeat_rate: float = env("TETHER_HEARTBEAT_RATE", 10.0)
    """Heartbeats a second one cluster may send (agents send one every few seconds); the rest are dropped
    unread, so one agent's flood cannot delay every other cluster's heartbeats."""

    heartbeat_burst: float = 50.0
    """Heartbeats one cluster may send at once above ``heartbeat_rate``."""

    reconnect_hold: float = env("TETHER_RECONNECT_HOLD", 60.0)
    """Seconds after this replica starts listening (its start, its link back) during which a cluster it has
    not heard yet is not judged while other clusters are still heard for the first time: the fleet is still
    reconnecting (``logic.silence_counts_from``). Such a cluster is shown offline ``offline_after`` after the
    last first heartbeat, at the latest this plus ``offline_after`` after listening started."""

    transition_lanes: int = env("TETHER_TRANSITION_LANES", 32)
    """Transitions (online, offline: a record and an event, both fsynced) written at once, each cluster's in
    order (``transitions``). One at a time they held a fleet coming online together to ~120 a second."""

    transition_depth: int = env("TETHER_TRANSITION_DEPTH", 1024)
    """Transitions one lane holds before the heartbeats' reading waits for it."""

    heartbeat_interval: float = env("TETHER_HEARTBEAT_INTERVAL", 5.0)
    """Seconds between an agent's heartbeats (the registry tells agents the same): the span over which the
    fleet's lateness is taken (``hearing``), so that each cluster counts about once."""

    late_allowance_max: float = env("TETHER_LATE_ALLOWANCE_MAX", 30.0)
    """The most a silence's budget grows while the fleet's heartbeats reach health late (``hearing``: the
    median delay beyond each cluster's usual). A silence is judged against ``offline_after`` plus that delay,
    and never more than this: the detection budget stretches by as much as health hears late, and no more."""

    pending_limit: int = env("TETHER_HEARTBEAT_PENDING_LIMIT", 200_000)
    """Heartbeats waiting in health's inbox before NATS' client drops some (a slow consumer). Past a tenth
    of it, health holds its judgement of silent clusters (``logic.hold_judgement``)."""


class HealthMonitor:
    def __init__(
        self, settings: Settings, bus: Bus, presence: Records[Presence], clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings
        self.clock = clock
        """The platform's clock (wall time: presence records carry it)."""
        self.bus = bus
        self.bucket = presence
        self.presence: dict[str, Presence] = {}
        self.dirty: set[str] = set()
        self.written: dict[str, tuple[Presence, int]] = {}
        """What this replica last wrote of a cluster's presence, and its revision. A flush writes on top of
        it (compare-and-set) without reading first: half the KV round trips of 200 heartbeats a second at
        1,000 clusters. Anyone else's write since (a transition, another replica) makes the write fail and
        the next one read first."""
        self.lag: Histogram | None = None
        self.listening_since = clock()
        """When this replica started hearing heartbeats: silence before it is not counted."""
        self.last_first_heard = 0.0
        """When a cluster not heard since ``listening_since`` was heard last (the fleet coming back)."""
        self.limiter = RateLimiter(settings.heartbeat_rate, settings.heartbeat_burst)
        self.lateness = Lateness(settings.heartbeat_interval, settings.late_allowance_max)
        """How late the fleet's heartbeats reach this replica beyond each cluster's usual."""
        self.late = 0.0
        """The delay the last sweep allowed for (seconds)."""
        self._deaf = False
        self.inbox: Callable[[], logic.Inbox] | None = None
        """This replica's heartbeat inbox and connection, once subscribed."""
        self._inbox = logic.Inbox(0, 0, 0)
        self._holding = False
        self.transitions = TransitionWriter(settings.transition_lanes, settings.transition_depth)
        """Where transitions and purges go: written beside the heartbeats, each cluster's in order."""
        self.transiting: dict[str, int] = {}
        """Clusters with transitions handed to ``transitions`` and not yet written (how many): not flushed."""

    async def load(self) -> None:
        self.presence = await self.bucket.items()
        logger.info("loaded presence of %d clusters", len(self.presence))

    async def _publish(self, kind: str, cluster: str, at: float, reason: str = "") -> None:
        event = ClusterEvent(kind=kind, cluster=cluster, at=at, reason=reason)  # type: ignore[arg-type]
        # Retried through a leader election with the same id, so a lost acknowledgement never doubles it.
        await self.bus.publish(
            subjects.public_event(f"cluster.{kind}"), event, msg_id=f"cluster-{kind}-{cluster}-{at!r}"
        )

    async def on_heartbeat(self, msg: Delivery) -> None:
        # First and cheap: a flooding cluster's surplus is dropped before anything is decoded.
        if not self.limiter.allow(msg.subject, time.monotonic()):
            return
        now = self.clock()
        try:
            hb = msg.decode(Heartbeat)
            if subjects.cluster_of_heartbeat(msg.subject) != hb.cluster:
                raise TetherError(f"heartbeat for {hb.cluster!r} arrived on {msg.subject!r}")
        except TetherError as exc:
            logger.warning("dropped heartbeat on %s: %s", msg.subject, exc.description)
            return
        if hb.sent_at:
            lateness = now - hb.sent_at
            self.lateness.heard(hb.cluster, lateness, now)
            if self.lag is not None:
                self.lag.record(max(0.0, lateness))
        current = self.presence.get(hb.cluster)
        if current is None or current.last_seen < self.listening_since:
            self.last_first_heard = now
        new, transition = logic.observe(current, hb, now)
        self.presence[hb.cluster] = new
        if transition is None:
            self.dirty.add(hb.cluster)
            return
        await self._submit(new, transition, now)

    async def _submit(self, new: Presence, kind: str, now: float) -> None:
        name = new.cluster
        self.transiting[name] = self.transiting.get(name, 0) + 1
        try:
            await self.transitions.submit(name, functools.partial(self._transition_once, new, kind, now))
        except BaseException:
            self._transited(name)  # never queued (a stop while its lane was full)
            raise

    async def _transition_once(self, new: Presence, kind: str, now: float) -> None:
        try:
            await self._transition(new, kind, now)
        finally:
            self._transited(new.cluster)

    def _transited(self, name: str) -> None:
        left = self.transiting.pop(name, 1) - 1
        if left > 0:
            self.transiting[name] = left

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
        inbox = self.inbox()
        why = logic.hold_judgement(inbox, self._inbox, self.settings.pending_limit)
        self._inbox = inbox
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
        if not await self._heard_until_now():
            return
        now = self.clock()
        if not self.judging(now):
            return
        since = self.listening_since
        unheard_since = logic.silence_counts_from(since, self.last_first_heard, self.settings.reconnect_hold)
        budget = self.settings.offline_after + self._allowance(now)
        for name, current in list(self.presence.items()):
            not_before = since if current.last_seen >= since else unheard_since
            new, transition = logic.sweep(current, now, budget, not_before)
            if transition is not None:
                self.presence[name] = new
                await self._submit(new, transition, now)

    async def _heard_until_now(self) -> bool:
        """Wait until what NATS sent this replica so far has been read; False when it does not answer in time
        (nothing is judged then: silence is not evidence while health cannot hear)."""
        try:
            await self.bus.round_trip(timeout=self.settings.offline_after)
        except TetherError as exc:
            if not self._deaf:
                logger.warning("no cluster judged until NATS answers health again: %s", exc.description)
            self._deaf = True
            return False
        if self._deaf:
            logger.warning("NATS answers health again")
        self._deaf = False
        return True

    def _allowance(self, now: float) -> float:
        """How much longer than ``offline_after`` a silence may last now: how late the fleet is heard."""
        late = self.lateness.behind(now)
        if (late >= LATE_LOGGED) != (self.late >= LATE_LOGGED):
            if late >= LATE_LOGGED:
                logger.warning("the fleet's heartbeats reach health %.1fs late: silences get as much longer", late)
            else:
                logger.info("the fleet's heartbeats reach health in time again (%.1fs late)", late)
        self.late = late
        return late

    async def flush_once(self) -> None:
        dirty, self.dirty = self.dirty, set()
        rate = self.settings.seen_writes_per_second
        refreshes = logic.Allowance(rate * self.settings.flush_interval if rate > 0 else None)
        for name in dirty:
            mine = self.presence.get(name)
            if mine is None:
                continue
            if name in self.transiting:
                # Its transition is still to be written: written first by the flush, it would read as already
                # recorded (by another replica), and its event would never be published.
                self.dirty.add(name)
                continue
            try:
                if not await self._flush(name, mine, refreshes):
                    self.dirty.add(name)  # a refresh over this flush's allowance: a later flush writes it
            except Conflict:
                self.dirty.add(name)  # written by another replica right now: the next flush reads it
            except TetherError as exc:
                logger.warning("could not flush presence of %s: %s", name, exc)
                self.dirty.add(name)

    async def _flush(self, name: str, mine: Presence, refreshes: logic.Allowance) -> bool:
        """Write what is worth writing of ``mine``; False when it is a refresh over the allowance (not written)."""
        last = self.written.pop(name, None)
        if last is not None:
            new = logic.merge_seen(last[0], mine, self.settings.seen_write_interval)
            if new is None or not refreshes.take(logic.is_refresh(last[0], new)):
                self.written[name] = last
                return new is None
            try:
                self.written[name] = (new, await self.bucket.update(name, new, last[1]))
                return True
            except Conflict:
                pass  # written by someone else since: read it
        found = await self.bucket.get(name)
        if found is None:
            self.written[name] = (mine, await self.bucket.create(name, mine))
            return True
        new = logic.merge_seen(found[0], mine, self.settings.seen_write_interval)
        if new is None or not refreshes.take(logic.is_refresh(found[0], new)):
            self.written[name] = found
            return new is None
        self.written[name] = (new, await self.bucket.update(name, new, found[1]))
        return True

    async def on_disconnected(self, msg: Delivery) -> None:
        try:
            event = msg.decode(ClusterEvent)
        except TetherError as exc:
            logger.warning("dropped event on %s: %s", msg.subject, exc.description)
            return
        current = self.presence.get(event.cluster)
        if current is not None and current.online:
            new = logic.mark_offline(current, time.time(), "Disconnected", "the cluster was disconnected")
            self.presence[event.cluster] = new
            await self._submit(new, "offline", time.time())

    async def on_removed(self, msg: Delivery) -> None:
        """A removed cluster leaves no presence behind (in memory or in KV)."""
        try:
            event = msg.decode(ClusterEvent)
        except TetherError as exc:
            logger.warning("dropped event on %s: %s", msg.subject, exc.description)
            return
        self.presence.pop(event.cluster, None)
        self.written.pop(event.cluster, None)
        self.lateness.forget(event.cluster)
        # In the cluster's lane: after any transition of it still being written, which would bring it back.
        await self.transitions.submit(event.cluster, functools.partial(self._purge, event.cluster))

    async def _purge(self, name: str) -> None:
        try:
            await self.bucket.purge(name)
        except TetherError as exc:
            logger.warning("could not purge the presence of %s: %s", name, exc)

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
        if found.online and found.last_seen < self.listening_since:
            return msgspec.structs.replace(found, unheard=True)
        return found


def instrument(rt: Runtime, monitor: HealthMonitor) -> None:
    meter = rt.meter(__name__)
    monitor.lag = meter.create_histogram(
        "tether.heartbeat.lag",
        unit="s",
        description="Heartbeat arrival (platform clock) minus its sending",
        explicit_bucket_boundaries_advisory=[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
    )
    meter.create_observable_gauge(
        "tether.clusters.online",
        callbacks=[lambda _opts: [Observation(sum(p.online for p in monitor.presence.values()))]],
        description="Clusters whose agent is connected",
    )
    meter.create_observable_gauge(
        "tether.heartbeat.late",
        unit="s",
        callbacks=[lambda _opts: [Observation(monitor.late)]],
        description="How late the fleet's heartbeats reach health beyond each cluster's usual (median over a "
        "heartbeat period): the time a silence may last beyond the offline budget",
    )


async def setup(rt: Runtime, settings: Settings) -> None:
    _, presence = await asyncio.gather(  # at once, as the registry's
        rt.bus.declare_streams("platform"), rt.bus.bucket(subjects.BUCKET_PRESENCE, Presence)
    )
    monitor = HealthMonitor(settings, rt.bus, presence)
    await until_done("loading every cluster's presence", monitor.load)
    instrument(rt, monitor)
    heartbeats = await rt.subscribe(subjects.HEARTBEAT_ANY, monitor.on_heartbeat, pending_limit=settings.pending_limit)
    monitor.inbox = lambda: logic.Inbox(heartbeats.pending, heartbeats.dropped, rt.bus.reconnects)
    monitor.listening_since = monitor.clock()
    await rt.subscribe(subjects.public_event("cluster.disconnected"), monitor.on_disconnected)
    await rt.subscribe(subjects.public_event("cluster.removed"), monitor.on_removed)
    rt.endpoints.platform(subjects.Health.PRESENCE_LIST, Empty, monitor.list)
    rt.endpoints.platform(subjects.Health.PRESENCE_GET, NameRequest, monitor.get)
    rt.task("sweep", lambda: monitor.every(settings.sweep_interval, "sweep"))
    rt.task("flush", lambda: monitor.every(settings.flush_interval, "flush"))
    monitor.transitions.start()
    rt.on_stop(monitor.flush_once)  # after the subscriptions stop: what was heard last is kept
    rt.on_stop(monitor.transitions.stop)  # before that flush (the last added runs first)
    logger.info("health: clusters go offline after %.1fs of silence", settings.offline_after)


async def run(settings: Settings, **options: Unpack[Options]) -> None:
    await serve("health", settings.common, functools.partial(setup, settings=settings), **options)
