"""Lifecycle handlers and ``run``.

Every change is written to KV first (desired state, with a new generation and
operation id, compare-and-set), then published as a command whose
``Nats-Msg-Id`` is the operation id. A crash between the two is repaired at
start: every record not yet observed at its generation is published again, and
the stream drops the copies it already has. Results and inventories come back
on the EVT stream through durable consumers shared by all replicas.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from schemas import subjects
from schemas.audit import AuditRecord
from schemas.errors import Conflict, InvalidInput, NotFound, TetherError, Unavailable
from schemas.messages import (
    MAX_GENERATION,
    ClusterList,
    ClusterRecord,
    Command,
    CommandResult,
    Empty,
    Inventory,
    InventoryItem,
    Membership,
    MembershipChanged,
    NameRequest,
    Presence,
    PresenceList,
    ProjectRecord,
    Role,
    VisibleProjects,
    WorkloadAction,
    WorkloadCreate,
    WorkloadEvent,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
    WorkloadRef,
    clip,
    decode,
    ref_of,
    workload_key,
)
from schemas.names import check_name
from services import VERSION
from services.bus import (
    Bucket,
    Connection,
    JetStream,
    Msg,
    ServiceHost,
    Telemetry,
    call,
    close,
    connect,
    ensure_bucket,
    ensure_platform_streams,
)
from services.bus.consuming import consume
from services.bus.faults import crash_point
from services.bus.publishing import publish
from services.bus.settings import ServiceSettings
from services.bus.streams import ensure_cmd_streams
from services.lifecycle import logic
from services.lifecycle.concurrency import KeyedLocks, Recent, all_done
from services.lifecycle.removal import Removal

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    sleep_check_interval: float = 15.0
    """Seconds between checks for tenants idle past their ``sleep_after``."""

    empty_grace: float = 600.0
    """Seconds a cluster's desired state must stay empty before its leftovers are deleted."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            common=ServiceSettings.from_env(),
            sleep_check_interval=float(os.environ.get("TETHER_SLEEP_CHECK_INTERVAL", "15")),
            empty_grace=float(os.environ.get("TETHER_EMPTY_GRACE", "600")),
        )


RESULT_CONCURRENCY = 32
"""Results of different clusters recorded at once (one cluster's still in order): each waits on KV and
stream round trips, and one at a time capped the fleet at about a hundred commands a second."""

KNOWN_RECORDS = 20_000
"""Records this replica wrote last, remembered with their revision (about 1 KB each): the next action or
result on one of them writes on top of it (compare-and-set) without reading it first."""

INVENTORY_SNAPSHOT_TTL = 1.0
"""Seconds one scan of the desired state serves inventories (10,000 agents report every 2 minutes)."""

LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]
"""Seconds: commands take milliseconds when the agent is there, minutes when it is not."""


def new_op_id() -> str:
    return uuid.uuid4().hex


def _stream_seq(msg: Msg) -> str:
    """The message's sequence in its stream ('' when it has none, e.g. not from JetStream)."""
    try:
        return str(msg.metadata.sequence.stream)
    except Exception:  # not a JetStream message
        return ""


class _Progress:
    """Tells JetStream a long handler is still at work, so the message is not redelivered meanwhile."""

    EVERY = 50

    def __init__(self, msg: Msg) -> None:
        self.msg = msg
        self.steps = 0

    async def tick(self) -> None:
        self.steps += 1
        if self.steps % self.EVERY == 0 and self.msg.reply:
            try:
                await self.msg.in_progress()
            except Exception as exc:  # advisory: at worst the message comes back and repeats its commands' ids
                logger.debug("in-progress ack failed: %s", exc)


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        nc: Connection,
        js: JetStream,
        desired: Bucket[WorkloadRecord],
        telemetry: Telemetry | None = None,
    ) -> None:
        self.settings = settings
        meter = (telemetry or Telemetry.create("lifecycle")).meter("tether.lifecycle")
        self.issued = meter.create_counter("tether.commands.issued", description="Commands sent to agents")
        self.applied = meter.create_counter("tether.commands.applied", description="Commands agents applied")
        self.failed = meter.create_counter("tether.commands.failed", description="Commands agents could not apply")
        self.resyncs = meter.create_counter("tether.resyncs", description="Inventories reconciled")
        self.latency = meter.create_histogram(
            "tether.command.latency",
            unit="s",
            description="From the desired-state write to the agent's result",
            explicit_bucket_boundaries_advisory=LATENCY_BUCKETS,
        )
        self.pending: dict[str, int] = {}
        meter.create_observable_gauge(
            "tether.commands.pending",
            callbacks=[self._observe_pending],
            description="Desired changes not yet applied, per cluster",
        )
        self.nc = nc
        self.js = js
        self.desired = desired
        self.timeout = settings.common.bus.request_timeout
        self.empty_since: dict[str, float] = {}
        self._writes = asyncio.Lock()
        self._objects = KeyedLocks()
        self._known: Recent[tuple[WorkloadRecord, int]] = Recent(KNOWN_RECORDS)
        self._snapshot: tuple[float, list[WorkloadRecord]] | None = None

    def _observe_pending(self, _options: CallbackOptions) -> list[Observation]:
        return [Observation(n, {"cluster": cluster}) for cluster, n in self.pending.items()]

    def count_pending(self, records: list[WorkloadRecord]) -> None:
        pending = dict.fromkeys(self.pending, 0)
        for r in records:
            pending[r.spec.cluster] = pending.get(r.spec.cluster, 0) + (0 if logic.in_sync(r) else 1)
        self.pending = pending

    # -- other services ----------------------------------------------------------------
    async def project(self, name: str) -> ProjectRecord:
        return await call(self.nc, subjects.Projects.GET, NameRequest(name=name), ProjectRecord, timeout=self.timeout)

    async def membership(self, project: str) -> Membership:
        return await call(
            self.nc, subjects.Access.MEMBERS_GET, NameRequest(name=project), Membership, timeout=self.timeout
        )

    async def role_of(self, user: str, project: str) -> Role | None:
        """A user's effective role in a project (through teams too); None for no role or no such user."""
        if not user:
            return None
        try:
            seen = await call(
                self.nc, subjects.Access.VISIBLE, NameRequest(name=user), VisibleProjects, timeout=self.timeout
            )
        except NotFound:
            return None
        return seen.projects.get(project)

    # -- commands and events ----------------------------------------------------------------
    async def send(self, record: WorkloadRecord, op_id: str | None = None, by: str = "") -> None:
        """Publish the command and its audit record; returns when the stream has both.

        The two publishes overlap: each is retried with its own message id until acknowledged, and neither
        depends on the other (a command whose publish fails is re-sent from the desired state, and its audit
        record, once in, is not written twice).
        """
        command = Command(
            op_id=op_id or record.op_id,
            generation=record.generation,
            spec=record.spec,
            issued_at=time.time(),
            operation=record.operation,
        )
        span = trace.get_current_span().get_span_context()
        audit = AuditRecord(
            kind="command",
            at=time.time(),
            user=by or record.created_by,
            action=record.operation,
            target=f"{record.spec.kind}/{record.spec.project}/{record.spec.name}",
            cluster=record.spec.cluster,
            result="issued",
            op_id=command.op_id,
            trace_id=f"{span.trace_id:032x}" if span.is_valid else "",
        )
        await all_done(
            publish(self.js, subjects.cmd(record.spec.cluster, subjects.VERB_APPLY), command, msg_id=command.op_id),
            publish(self.js, subjects.audit_command(record.spec.cluster), audit, msg_id=f"audit-{command.op_id}"),
        )
        self.issued.add(1, {"cluster": record.spec.cluster})

    async def announce(self, old: WorkloadRecord | None, new: WorkloadRecord, reason: str = "") -> None:
        before = logic.phase(old) if old else None
        after = logic.phase(new)
        if before == after:
            return
        event = WorkloadEvent(
            kind=new.spec.kind,
            project=new.spec.project,
            name=new.spec.name,
            cluster=new.spec.cluster,
            phase=after,
            at=time.time(),
            reason=reason,
            message=new.failure.message if after == "Failed" and new.failure else "",
        )
        # One per phase entered at a generation: a retried publish (or a second replica folding the same
        # result) is dropped by the stream instead of announced twice.
        msg_id = f"{new.spec.kind}-{new.spec.project}-{new.spec.name}-{after.lower()}-g{new.generation}"
        await publish(self.js, subjects.public_event(f"{new.spec.kind}.{after.lower()}"), event, msg_id=msg_id)

    # -- records ---------------------------------------------------------------------------
    async def all_records(self) -> list[WorkloadRecord]:
        """Every live record (tombstones of deleted objects left out)."""
        return [r for r in (await self.desired.items()).values() if not logic.is_tombstone(r)]

    async def recent_records(self) -> list[WorkloadRecord]:
        """``all_records()``, shared by the inventories of the next ``INVENTORY_SNAPSHOT_TTL`` seconds.

        One bucket scan per inventory made resync cost O(clusters x records). What a slightly old snapshot
        could get wrong is checked against the record itself before anything is sent.
        """
        now = time.monotonic()
        if self._snapshot is None or now - self._snapshot[0] > INVENTORY_SNAPSHOT_TTL:
            self._snapshot = (now, await self.all_records())
        return self._snapshot[1]

    async def get_record(self, ref: WorkloadRef) -> tuple[WorkloadRecord, int]:
        found = await self.desired.get(workload_key(ref))
        if found is None or logic.is_tombstone(found[0]):
            raise NotFound(f"{ref.kind} {ref.name!r} not found in project {ref.project!r}")
        return found

    # -- endpoints ---------------------------------------------------------------------------
    async def create(self, req: WorkloadCreate) -> WorkloadRecord:
        logic.validate_create(req)
        project = await self.project(req.project)
        if project.deleting:
            raise Conflict(f"project {req.project!r} is being deleted")
        membership = await self.membership(req.project)
        owner_role = await self.role_of(req.created_by, req.project)
        clusters, presence = await self.placement_view(req.cluster)
        need = logic.resources_for(req)
        # One writer at a time per replica keeps quota and placement checks honest; the
        # create-only KV write settles races between replicas on the same name.
        async with self._writes:
            records = await self.all_records()
            k = workload_key(req)
            previous = await self.desired.get(k)
            if previous is not None and not logic.is_tombstone(previous[0]):
                if not logic.in_sync(previous[0]):
                    # Perhaps a retry of a create whose answer was lost before its command went out
                    # (a crash, a NATS failover): send it again; the stream drops it if it has it.
                    await self.send(previous[0])
                raise Conflict(f"{req.kind} {req.name!r} already exists in project {req.project!r}")
            logic.check_quota(project, records, req.kind, need)
            cluster = logic.place(
                project,
                req.cluster,
                clusters,
                presence,
                records,
                need,
            )
            record = logic.new_record(
                req,
                project,
                cluster,
                membership,
                time.time(),
                new_op_id(),
                previous[0] if previous else None,
                owner_role,
            )
            if previous is None:
                revision = await self.desired.create(k, record)
            else:
                revision = await self.desired.update(k, record, previous[1])
            self._known.put(k, (record, revision))
        crash_point("lifecycle-after-desired-write")
        logger.info("%s %s/%s desired on %s (op %s)", req.kind, req.project, req.name, cluster, record.op_id)
        await all_done(self.send(record), self.announce(None, record, "Created"))
        return record

    async def placement_view(self, requested: str) -> tuple[dict[str, ClusterRecord], dict[str, Presence]]:
        """The clusters (and their presence) placement chooses from: only the named one when there is one,
        so a create does not list a fleet of 10,000 clusters twice."""
        if requested:
            check_name(requested, "cluster name")
            found = await asyncio.gather(
                call(
                    self.nc,
                    subjects.Registry.CLUSTER_GET,
                    NameRequest(name=requested),
                    ClusterRecord,
                    timeout=self.timeout,
                ),
                call(
                    self.nc, subjects.Health.PRESENCE_GET, NameRequest(name=requested), Presence, timeout=self.timeout
                ),
                return_exceptions=True,
            )
            for answer in found:
                if isinstance(answer, BaseException) and not isinstance(answer, NotFound):
                    raise answer
            record, seen = found
            return (
                {record.name: record} if isinstance(record, ClusterRecord) else {},
                {seen.cluster: seen} if isinstance(seen, Presence) else {},
            )
        clusters, presence = await asyncio.gather(
            call(self.nc, subjects.Registry.CLUSTER_LIST, Empty(), ClusterList, timeout=self.timeout),
            call(self.nc, subjects.Health.PRESENCE_LIST, Empty(), PresenceList, timeout=self.timeout),
        )
        return {c.name: c for c in clusters.clusters}, {p.cluster: p for p in presence.items}

    async def get(self, ref: WorkloadRef) -> WorkloadRecord:
        check_name(ref.project, "project name")
        check_name(ref.name, f"{ref.kind} name")
        record, _ = await self.get_record(ref)
        return record

    async def list(self, q: WorkloadQuery) -> WorkloadList:
        records = [
            r
            for r in await self.all_records()
            if r.spec.kind == q.kind
            and (q.all or r.spec.project in q.projects)
            and (not q.cluster or r.spec.cluster == q.cluster)
        ]
        return WorkloadList(items=sorted(records, key=lambda r: (r.spec.project, r.spec.name)))

    async def action(self, req: WorkloadAction) -> WorkloadRecord:
        ref = ref_of(req)
        check_name(req.project, "project name")
        check_name(req.name, f"{req.kind} name")
        if req.version and req.action != "upgrade":
            raise InvalidInput(f"--version applies to upgrade, not {req.action}")
        op_id = new_op_id()
        # One action at a time per object (a second one waits, then sees the first's result rather than a
        # conflict); actions on different objects run side by side: the CAS write settles any race with a
        # create, a result or another replica. Only an upgrade checks the quota, so only it takes the
        # writers' lock that keeps quota checks honest.
        k = workload_key(ref)
        async with self._objects.hold(k):
            known = self._known.get(k)
            done = await self._act(req, known, op_id) if known is not None else None
            if done is None:
                done = await self._act(req, await self.get_record(ref), op_id, fresh=True)
                assert done is not None  # a record just read always decides
            record, new = done
        if new is None:
            return record
        crash_point("lifecycle-after-desired-write")
        logger.info(
            "%s %s/%s: %s (generation %d, op %s)", req.kind, req.project, req.name, req.action, new.generation, op_id
        )
        await all_done(self.send(new, by=req.by), self.announce(record, new, req.action.capitalize()))
        return new

    async def _act(
        self, req: WorkloadAction, found: tuple[WorkloadRecord, int], op_id: str, *, fresh: bool = False
    ) -> tuple[WorkloadRecord, WorkloadRecord | None] | None:
        """(the record, the new one written or None); None when ``found`` is a remembered record that may be
        old (anything but a successful write on top of it): the caller reads the record and decides again."""
        record, revision = found
        if not fresh and logic.is_tombstone(record):
            return None
        if logic.repeats_pending(record, req.action, req.version):
            if not fresh:
                return None
            # A retry of the pending operation after a lost answer (a crash, a NATS failover): make sure its
            # command went out; the stream drops it if it has it already.
            await self.send(record, by=req.by)
            return record, None
        try:
            new = logic.act(record, req.action, req.version, op_id, time.time())
        except TetherError:
            if not fresh:
                return None
            raise
        if new is None:
            return (record, None) if fresh else None
        k = workload_key(new.spec)
        try:
            if req.action == "upgrade":
                # An upgrade runs old and new control planes side by side for a while.
                project = await self.project(req.project)
                async with self._writes:
                    logic.check_quota(project, await self.all_records(), req.kind, record.spec.resources, count=0)
                    written = await self.desired.update(k, new, revision)
            else:
                written = await self.desired.update(k, new, revision)
        except Conflict:
            self._known.forget(k)
            if not fresh:
                return None
            raise
        self._known.put(k, (new, written))
        return record, new

    # -- agent results, inventories, membership changes ---------------------------------------------
    async def on_result(self, msg: Msg) -> None:
        result = decode(msg.data, CommandResult)
        if subjects.cluster_of_evt(msg.subject) != result.cluster:
            raise InvalidInput(f"result for {result.cluster!r} arrived on {msg.subject!r}")
        k = workload_key(result)
        known = self._known.get(k)
        if known is not None and await self._record_result(k, result, known):
            return
        found = await self.desired.get(k)
        if found is None:
            return  # an orphan's deletion, or a record already forgotten
        await self._record_result(k, result, found, fresh=True)

    async def _record_result(
        self, k: str, result: CommandResult, found: tuple[WorkloadRecord, int], *, fresh: bool = False
    ) -> bool:
        """Fold ``result`` into the record; False when ``found`` is a remembered record that may be old
        (anything but a successful write on top of it): the caller reads the record and tries again."""
        record, revision = found
        problem = logic.result_problem(record, result, result.cluster)
        if problem is not None:
            if fresh:
                logger.warning("dropped result for %s from cluster %s: %s", k, result.cluster, problem)
            return fresh
        if logic.is_tombstone(record):
            return fresh  # a late copy of the deletion's result
        new, gone = logic.observe(record, result, time.time())
        if new is record:
            return fresh
        try:
            written = await self.desired.update(k, new, revision)  # a deleted object stays, as a tombstone
        except Conflict:
            self._known.forget(k)
            if not fresh:
                return False
            # Another replica (or an action) wrote the record meanwhile: redelivered, the result is folded
            # into the new one (dropping it would leave the record out of sync until the next resync).
            raise Unavailable(f"{k} changed while a result was being recorded") from None
        self._known.put(k, (new, written))
        outcome = logic.result_outcome(record, result)
        if outcome == "applied":
            self.applied.add(1, {"cluster": result.cluster})
            at = logic.agent_time(result.at, time.time())
            self.latency.record(max(0.0, at - record.updated_at), {"cluster": result.cluster})
        elif outcome == "failed":
            self.failed.add(1, {"cluster": result.cluster})
            await self.announce_failed(new, result)
        if gone:
            logger.info("%s deleted from %s", k, result.cluster)
            await self.announce_deleted(record)
            return True
        reason = clip(result.reason, logic.MAX_REASON)
        if not result.ok:
            logger.warning("%s failed on %s: %s: %s", k, result.cluster, reason, clip(result.message))
        await self.announce(record, new, reason or "Applied")
        return True

    async def announce_failed(self, record: WorkloadRecord, result: CommandResult) -> None:
        """``command.failed`` for every failed command, a delete too (its phase stays Deleting, so no phase
        event says it); one per operation (the message id), however often the result is delivered."""
        event = WorkloadEvent(
            kind=record.spec.kind,
            project=record.spec.project,
            name=record.spec.name,
            cluster=record.spec.cluster,
            phase=logic.phase(record),
            at=time.time(),
            reason=clip(result.reason, logic.MAX_REASON) or "ApplyFailed",
            message=clip(result.message),  # an agent's text: bounded before it is published for everyone
        )
        await publish(self.js, subjects.public_event("command.failed"), event, msg_id=f"failed-{record.op_id}")

    async def announce_deleted(self, record: WorkloadRecord) -> None:
        event = WorkloadEvent(
            kind=record.spec.kind,
            project=record.spec.project,
            name=record.spec.name,
            cluster=record.spec.cluster,
            phase="Deleted",
            at=time.time(),
            reason="Deleted",
        )
        msg_id = f"{record.spec.kind}-{record.spec.project}-{record.spec.name}-deleted-g{record.generation}"
        await publish(self.js, subjects.public_event(f"{record.spec.kind}.deleted"), event, msg_id=msg_id)

    async def on_inventory(self, msg: Msg) -> None:
        inventory = decode(msg.data, Inventory)
        cluster = subjects.cluster_of_evt(msg.subject)  # the broker's word, never the payload's
        if cluster != inventory.cluster:
            raise InvalidInput(f"inventory for {inventory.cluster!r} arrived on {msg.subject!r}")
        now = time.time()
        if now - inventory.at > 600:
            return  # stale: a newer one will come
        desired = [r for r in await self.recent_records() if r.spec.cluster == cluster]
        if any(r.spec.state != "deleted" for r in desired):
            self.empty_since.pop(cluster, None)
        else:
            self.empty_since.setdefault(cluster, now)
        self.resyncs.add(1, {"cluster": cluster})
        plan = logic.reconcile(
            desired,
            inventory.items,
            empty_since=self.empty_since.get(cluster),
            now=now,
            grace=self.settings.empty_grace,
        )
        if plan.held_back:
            logger.warning(
                "cluster %s reports %d objects but its desired state is empty; holding deletes back for %.0fs",
                cluster,
                len(inventory.items),
                self.settings.empty_grace,
            )
        if plan.deferred:
            logger.warning("resync %s: %d re-sends or deletes left for the next resync", cluster, plan.deferred)
        # Ids derived from the inventory's place in the stream: a redelivered inventory (a handler that
        # outlived its ack wait, a crash) asks for the same commands again, and the stream drops the copies.
        origin = _stream_seq(msg) or new_op_id()
        progress = _Progress(msg)
        await self._resend(cluster, plan.resend, inventory, origin, progress)
        await self._delete_orphans(cluster, plan.orphans, origin, now, progress)
        for record in plan.done:
            k = workload_key(record.spec)
            found = await self.desired.get(k)
            if found is None or found[0].generation != record.generation or found[0].spec.cluster != cluster:
                continue
            await self.desired.update(k, logic.confirm_deleted(found[0], now), found[1])
            await self.announce_deleted(record)
            await progress.tick()
        for k, at in logic.activity_updates(desired, inventory.items, now).items():
            found = await self.desired.get(k)
            if found is None or found[0].spec.cluster != cluster:
                continue
            touched = logic.touch(found[0], at, now)
            if touched is not None:
                try:
                    await self.desired.update(k, touched, found[1])
                except Conflict:
                    pass  # someone else wrote it; activity is advisory
            await progress.tick()

    async def _resend(
        self, cluster: str, stale: Sequence[WorkloadRecord], inventory: Inventory, origin: str, progress: _Progress
    ) -> None:
        have = {ref_of(i): i.generation for i in inventory.items}
        for old in stale:
            # The snapshot may be a moment old: re-send what the record says now.
            found = await self.desired.get(workload_key(old.spec))
            record = found[0] if found is not None else None
            if record is None or logic.is_tombstone(record) or record.spec.cluster != cluster:
                continue
            if have.get(ref_of(record.spec), 0) >= record.generation:
                continue
            k = workload_key(record.spec)
            logger.info("resync %s: re-sending %s (generation %d)", cluster, k, record.generation)
            await self.send(record, op_id=f"{logic.RESYNC_PREFIX}{origin}-{k}-{record.generation}")
            await progress.tick()

    async def _delete_orphans(
        self, cluster: str, orphans: Sequence[InventoryItem], origin: str, now: float, progress: _Progress
    ) -> None:
        for item in orphans:
            found = await self.desired.get(workload_key(item))
            if found is not None and not logic.is_tombstone(found[0]) and found[0].spec.cluster == cluster:
                continue  # created since the snapshot: wanted, not an orphan
            logger.info("resync %s: deleting unknown %s %s/%s", cluster, item.kind, item.project, item.name)
            command = Command(
                op_id=f"orphan-{origin}-{workload_key(item)}",
                generation=min(item.generation + 1, MAX_GENERATION),
                spec=logic.orphan_spec(item, cluster),
                issued_at=now,
                operation="resync",
            )
            await publish(self.js, subjects.cmd(cluster, subjects.VERB_APPLY), command, msg_id=command.op_id)
            await progress.tick()

    async def on_membership(self, msg: Msg) -> None:
        change = decode(msg.data, MembershipChanged)
        membership = await self.membership(change.project)
        roles: dict[str, Role | None] = {}
        for record in await self.all_records():
            if record.spec.project != change.project:
                continue
            k = workload_key(record.spec)
            owner = record.created_by
            if owner not in roles:
                roles[owner] = await self.role_of(owner, change.project)
            role = roles[owner]

            def update(current: WorkloadRecord | None, role: Role | None = role) -> WorkloadRecord | None:
                if current is None:
                    return None
                return logic.with_members(current, membership, new_op_id(), time.time(), role)

            before = await self.desired.get(k)
            new = await self.desired.mutate(k, update)
            if new is not None and before is not None and new.generation != before[0].generation:
                logger.info("access of %s changed: generation %d", k, new.generation)
                await self.send(new)

    # -- background work --------------------------------------------------------------------------
    async def republish_pending(self) -> None:
        """After a crash between a KV write and its publish: publish again (the stream drops copies)."""
        pending = sorted((r for r in await self.all_records() if not logic.in_sync(r)), key=lambda r: r.updated_at)
        for record in pending:
            await self.send(record)
        if pending:
            logger.info("re-published %d pending commands", len(pending))

    async def auto_sleep(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sleep_check_interval)
            try:
                now = time.time()
                records = await self.all_records()
                self.count_pending(records)
                for record in records:
                    if logic.due_for_sleep(record, now):
                        logger.info(
                            "%s idle for %.0fs: sleeping it", workload_key(record.spec), now - record.last_activity
                        )
                        await self.action(
                            WorkloadAction(
                                kind="tenant",
                                project=record.spec.project,
                                name=record.spec.name,
                                action="sleep",
                                by="lifecycle",
                            )
                        )
            except asyncio.CancelledError:
                raise
            except TetherError as exc:
                logger.warning("auto-sleep: %s", exc.description)
            except Exception:
                logger.exception("auto-sleep failed; will retry")


async def run(settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None) -> None:
    telemetry = telemetry or Telemetry.create("lifecycle", settings.common.telemetry)
    nc = await connect(settings.common.bus, "lifecycle")
    try:
        js = nc.jetstream()
        replicas = settings.common.bus.replicas
        await ensure_platform_streams(js, replicas)
        await ensure_cmd_streams(js, replicas)
        desired = await ensure_bucket(js, subjects.BUCKET_DESIRED, WorkloadRecord, replicas=replicas, history=5)
        lifecycle = Lifecycle(settings, nc, js, desired, telemetry)
        tracer = telemetry.tracer("tether.lifecycle")
        await lifecycle.republish_pending()
        host = ServiceHost(nc, "lifecycle", VERSION, telemetry.tracer(__name__))
        L = subjects.Lifecycle
        host.endpoint(L.CREATE, WorkloadCreate, lifecycle.create)
        host.endpoint(L.GET, WorkloadRef, lifecycle.get)
        host.endpoint(L.LIST, WorkloadQuery, lifecycle.list)
        host.endpoint(L.ACTION, WorkloadAction, lifecycle.action)
        Removal(lifecycle).install(host)
        async with host, asyncio.TaskGroup() as tg:
            tg.create_task(
                consume(
                    js,
                    stream=subjects.EVT_STREAM,
                    durable=subjects.LIFECYCLE_RESULTS_CONSUMER,
                    filter_subject=subjects.evt_kind(subjects.EVT_RESULT),
                    handler=lifecycle.on_result,
                    tracer=tracer,
                    concurrency=RESULT_CONCURRENCY,
                ),
                name="lifecycle-results",
            )
            tg.create_task(
                consume(
                    js,
                    stream=subjects.EVT_STREAM,
                    durable=subjects.LIFECYCLE_INVENTORY_CONSUMER,
                    filter_subject=subjects.evt_kind(subjects.EVT_INVENTORY),
                    handler=lifecycle.on_inventory,
                    batch=8,
                ),
                name="lifecycle-inventory",
            )
            tg.create_task(
                consume(
                    js,
                    stream=subjects.EVENTS_STREAM,
                    durable=subjects.LIFECYCLE_MEMBERSHIP_CONSUMER,
                    filter_subject=subjects.MEMBERSHIP_CHANGED,
                    handler=lifecycle.on_membership,
                ),
                name="lifecycle-membership",
            )
            tg.create_task(lifecycle.auto_sleep(), name="lifecycle-auto-sleep")
            logger.info("lifecycle ready")
            if ready:
                ready.set()
            await asyncio.Event().wait()
    finally:
        await close(nc)
        telemetry.shutdown()
