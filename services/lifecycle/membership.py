"""A project's members changed (``tether.events.project.members``): every tenant cluster and space of the
project gets its new RBAC as a new generation, sent to its agent like any other change."""

from __future__ import annotations

import logging
import time

from schemas.messages import Membership, MembershipChanged, Role, WorkloadRecord, workload_key
from services.bus import Delivery
from services.lifecycle import logic
from services.lifecycle.peers import Peers
from services.lifecycle.sending import Sender, new_op_id
from services.lifecycle.store import Desired

logger = logging.getLogger(__name__)


class MembershipFanout:
    def __init__(self, desired: Desired, sender: Sender, peers: Peers) -> None:
        self.desired = desired
        self.sender = sender
        self.peers = peers

    async def on_membership(self, d: Delivery) -> None:
        change = d.decode(MembershipChanged)
        membership = await self.peers.membership(change.project)
        roles: dict[str, Role | None] = {}
        for record in await self.desired.all_records():
            if record.spec.project != change.project:
                continue
            owner = record.created_by
            if owner not in roles:
                roles[owner] = await self.peers.role_of(owner, change.project)
            await self._update(record, membership, roles[owner])

    async def _update(self, record: WorkloadRecord, membership: Membership, role: Role | None) -> None:
        k = workload_key(record.spec)

        over: list[WorkloadRecord] = []  # the record the write replaced

        def update(current: WorkloadRecord) -> WorkloadRecord | None:
            over[:] = [current]
            return logic.with_members(current, membership, new_op_id(), time.time(), role)

        before = await self.desired.get(k)
        new = await self.desired.mutate(k, update)
        if new is not None and before is not None and new.generation != before[0].generation:
            logger.info("access of %s changed: generation %d", k, new.generation)
            await self.sender.send(new)
            await self.sender.superseded(new, logic.pushed_out(over[0], new), by=new.op_id)
