"""Lifecycle's endpoints for tenant clusters and spaces: create, get, list and the users' actions.

Every change is one write of the desired state (a new generation and operation id, compare-and-set): that
record is the command, which the cluster's agent follows; its audit record and event are published after.
"""

from __future__ import annotations

import asyncio
import logging
import time

from schemas.errors import Conflict, InvalidInput, TetherError
from schemas.messages import (
    WorkloadAction,
    WorkloadCreate,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
    WorkloadRef,
    ref_of,
    workload_key,
)
from schemas.names import check_name
from services.bus.faults import crash_point
from services.lifecycle import logic
from services.lifecycle.concurrency import all_done
from services.lifecycle.peers import Peers
from services.lifecycle.sending import Sender, op_id_from
from services.lifecycle.store import Desired, Found

logger = logging.getLogger(__name__)

REPUBLISH_CONCURRENCY = 64
"""Audit records re-published at once at a start (``republish_pending``). One at a time, the 1,000 pending
commands of a platform restart at 10,000 agents took lifecycle ~16 s before it served a result: each a fsynced
stream write on a server busy with the fleet's reconnects. Each record is its own operation (message id), and
no promise orders the audit records of different objects."""
ACT_READS = 3
"""Fresh reads an action may take when its compare-and-set keeps losing to concurrent writes (results)."""


class _Raced(Exception):
    """An action's compare-and-set lost to a concurrent write of the same record."""


Acted = tuple[WorkloadRecord, WorkloadRecord | None]
"""(the record acted on, the new one written or None when nothing changed)."""


class Workloads:
    def __init__(self, desired: Desired, sender: Sender, peers: Peers) -> None:
        self.desired = desired
        self.sender = sender
        self.peers = peers

    async def create(self, req: WorkloadCreate) -> WorkloadRecord:
        logic.validate_create(req)
        # Four questions to three services, none depending on another's answer: asked together, one round trip
        # instead of four in turn. A failure is the first in this order (a missing project before all else).
        asks = (
            asyncio.create_task(self.peers.project(req.project), name="create-project"),
            asyncio.create_task(self.peers.membership(req.project), name="create-membership"),
            asyncio.create_task(self.peers.role_of(req.created_by, req.project), name="create-owner-role"),
            asyncio.create_task(self.peers.placement_view(req.cluster), name="create-placement"),
        )
        await all_done(*asks)
        project, membership, owner_role = asks[0].result(), asks[1].result(), asks[2].result()
        clusters, presence = asks[3].result()
        if project.deleting:
            raise Conflict(f"project {req.project!r} is being deleted")
        need = logic.resources_for(req)
        # One writer at a time per replica keeps quota and placement checks honest; the
        # create-only KV write settles races between replicas on the same name.
        async with self.desired.writes:
            records = await self.desired.all_records()
            k = workload_key(req)
            previous = await self.desired.get(k)
            if previous is not None and not logic.is_tombstone(previous[0]):
                if not logic.in_sync(previous[0]):
                    # Perhaps a retry of a create whose answer was lost before its audit record went out
                    # (a crash, a NATS failover): publish it again; the stream drops it if it has it.
                    await self.sender.send(previous[0])
                raise Conflict(f"{req.kind} {req.name!r} already exists in project {req.project!r}")
            logic.check_quota(project, records, req.kind, need)
            cluster = logic.place(project, req.cluster, clusters, presence, records, need)
            old = previous[0] if previous else None
            op_id = op_id_from(req.op_id)
            record = logic.new_record(req, project, cluster, membership, time.time(), op_id, old, owner_role)
            await self.desired.write(k, record, previous[1] if previous else None)
        crash_point("lifecycle-after-desired-write")
        logger.info("%s desired on %s (op %s)", ref_of(req), cluster, record.op_id)
        await self.sender.send(record, call=req.call)  # announced when its cluster reports it (``Sender.announce``)
        return record

    async def get(self, ref: WorkloadRef) -> WorkloadRecord:
        check_name(ref.project, "project name")
        check_name(ref.name, f"{ref.kind} name")
        record, _ = await self.desired.get_live(ref)
        return record

    async def list(self, q: WorkloadQuery) -> WorkloadList:
        records = [
            r
            for r in await self.desired.all_records(caught_up=True)
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
        op_id = op_id_from(req.op_id)
        # One action at a time per object (a second one waits, then sees the first's result rather than a
        # conflict); actions on different objects run side by side: the CAS write settles any race with a
        # create, a result or another replica. Only an upgrade checks the quota, so only it takes the
        # writers' lock that keeps quota checks honest.
        k = workload_key(ref)
        async with self.desired.objects.hold(k):
            known = self.desired.known.get(k)
            done = await self._act(req, known, op_id) if known is not None else None
            for attempt in range(ACT_READS):
                if done is not None:
                    break
                try:
                    done = await self._act(req, await self.desired.get_live(ref), op_id, fresh=True)
                except _Raced:
                    # A result recorded (or another replica's write) between the read and the write: decide
                    # again on what is there now, a few times, before the caller is told it conflicted.
                    if attempt + 1 == ACT_READS:
                        raise Conflict(f"{k!r} kept changing; try again") from None
            assert done is not None  # a record just read always decides
            record, new = done
        if new is None:
            return record
        crash_point("lifecycle-after-desired-write")
        logger.info("%s: %s (generation %d, op %s)", ref, req.action, new.generation, op_id)
        pushed_out = logic.pushed_out(record, new)
        # The phase it asks for is announced when its cluster reports it (``Sender.announce``).
        steps = [self.sender.send(new, by=req.by, call=req.call)]
        if pushed_out:  # rarely: no task for nothing to say
            steps.append(self.sender.superseded(new, pushed_out, by=new.op_id))
        await all_done(*steps)
        return new

    async def action_own(self, req: WorkloadAction) -> WorkloadRecord:
        """``action`` asked on ``Lifecycle.ACTION_OWN``: only on the record of the user it names."""
        if not req.owned_by:
            raise InvalidInput("an action on one's own records names whose (owned_by)")
        return await self.action(req)

    async def _act(self, req: WorkloadAction, found: Found, op_id: str, *, fresh: bool = False) -> Acted | None:
        """What ``req`` does to ``found``; None when ``found`` is a remembered record that may be old
        (anything but a successful write on top of it): the caller reads the record and decides again."""
        record, revision = found
        if not fresh and logic.is_tombstone(record):
            return None
        try:
            logic.check_owner(record, req.owned_by)
        except TetherError:
            if not fresh:
                return None
            raise
        if logic.repeats_pending(record, req.action, req.version):
            if not fresh:
                return None
            # A retry of the pending operation after a lost answer (a crash, a NATS failover): make sure its
            # audit record went out; the stream drops it if it has it already.
            await self.sender.send(record, by=req.by)
            return record, None
        try:
            new = logic.act(record, req.action, req.version, op_id, time.time())
        except TetherError:
            if not fresh:
                return None
            raise
        if new is None:
            return (record, None) if fresh else None
        try:
            await self._write(req, record, new, revision)
        except Conflict:
            if not fresh:
                return None
            raise _Raced from None
        return record, new

    async def _write(self, req: WorkloadAction, record: WorkloadRecord, new: WorkloadRecord, revision: int) -> None:
        k = workload_key(new.spec)
        if req.action != "upgrade":
            await self.desired.write(k, new, revision, replaces=record)
            return
        # An upgrade runs old and new control planes side by side for a while.
        project = await self.peers.project(req.project)
        async with self.desired.writes:
            logic.check_quota(project, await self.desired.all_records(), req.kind, record.spec.resources, count=0)
            await self.desired.write(k, new, revision, replaces=record)

    async def republish_pending(self) -> None:
        """After a crash between a desired-state write and its audit record: publish again (the stream drops
        copies). The command needs nothing: the record is what the agent follows."""
        pending = sorted(
            (r for r in await self.desired.all_records() if not logic.in_sync(r)), key=lambda r: r.updated_at
        )
        turns = asyncio.Semaphore(REPUBLISH_CONCURRENCY)

        async def send(record: WorkloadRecord) -> None:
            async with turns:
                await self.sender.send(record)

        await all_done(*(send(record) for record in pending))
        if pending:
            logger.info("re-published the audit records of %d pending commands", len(pending))
