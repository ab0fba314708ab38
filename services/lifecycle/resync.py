"""Resync: an agent's inventory (on every (re)connect and every 2 minutes) against the desired state.

The agent follows its cluster's desired state itself (its consumer starts from the last record of each
object and applies whatever is not observed yet), so an inventory asks for little: a record the cluster
lost after reporting it is marked not observed (the agent applies it again), a failed one is written again
(one more try), what the platform does not want there gets a deletion record under that cluster's key
(never everything at once when the desired state is empty: ``empty_grace``), deletions the cluster shows
done become tombstones, and the activity the agent saw is recorded for auto-sleep.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from schemas import subjects
from schemas.errors import Conflict, InvalidInput
from schemas.messages import Inventory, InventoryItem, WorkloadRecord, ref_of, workload_key
from services.bus import Delivery
from services.lifecycle import logic
from services.lifecycle.metrics import Metrics
from services.lifecycle.sending import Sender, new_op_id
from services.lifecycle.store import Desired

logger = logging.getLogger(__name__)

STALE_INVENTORY = 600.0
"""Seconds after which an inventory is ignored: a newer one will come."""


class Progress:
    """Tells JetStream a long handler is still at work, so the message is not redelivered meanwhile."""

    EVERY = 50

    def __init__(self, d: Delivery) -> None:
        self.delivery = d
        self.steps = 0

    async def tick(self) -> None:
        self.steps += 1
        if self.steps % self.EVERY == 0:
            try:
                await self.delivery.in_progress()
            except Exception as exc:  # advisory: at worst the message comes back and repeats its commands' ids
                logger.debug("in-progress ack failed: %s", exc)


class InventoryResync:
    def __init__(self, desired: Desired, sender: Sender, metrics: Metrics, empty_grace: float) -> None:
        self.desired = desired
        self.sender = sender
        self.metrics = metrics
        self.empty_grace = empty_grace
        self.empty_since: dict[str, float] = {}
        """Since when each cluster's desired state has been empty (deletes are held back for a grace)."""

    async def on_inventory(self, d: Delivery) -> None:
        inventory = d.decode(Inventory)
        cluster = inventory.cluster
        if subjects.cluster_of_evt(d.subject) != cluster:  # the broker's word, never the payload's
            raise InvalidInput(f"inventory for {inventory.cluster!r} arrived on {d.subject!r}")
        now = time.time()
        if now - inventory.at > STALE_INVENTORY:
            return
        desired = await self.desired.cluster_records(cluster)
        plan = self._plan(cluster, desired, inventory, now)
        progress = Progress(d)
        await self._resend(cluster, plan.resend, inventory, now, progress)
        await self._delete_orphans(cluster, plan.orphans, inventory.at, now, progress)
        await self._confirm_deleted(cluster, plan.done, now, progress)
        await self._record_activity(cluster, desired, inventory, now, progress)

    def _plan(self, cluster: str, desired: list[WorkloadRecord], inventory: Inventory, now: float) -> logic.Resync:
        if any(r.spec.state != "deleted" for r in desired):
            self.empty_since.pop(cluster, None)
        else:
            self.empty_since.setdefault(cluster, now)
        self.metrics.resyncs.add(cluster)
        plan = logic.reconcile(
            desired, inventory.items, empty_since=self.empty_since.get(cluster), now=now, grace=self.empty_grace
        )
        if plan.held_back:
            logger.warning(
                "cluster %s reports %d objects but its desired state is empty; holding deletes back for %.0fs",
                cluster,
                len(inventory.items),
                self.empty_grace,
            )
        if plan.deferred:
            logger.warning("resync %s: %d re-sends or deletes left for the next resync", cluster, plan.deferred)
        return plan

    async def _resend(
        self, cluster: str, stale: Sequence[WorkloadRecord], inventory: Inventory, now: float, progress: Progress
    ) -> None:
        have = {ref_of(i): i.generation for i in inventory.items}
        for old in stale:
            # The snapshot may be a moment old: decide on what the record says now.
            k = workload_key(old.spec)
            found = await self.desired.get(k)
            if found is None or logic.is_tombstone(found[0]) or found[0].spec.cluster != cluster:
                continue
            record, revision = found
            if have.get(ref_of(record.spec), 0) >= record.generation:
                continue
            again = logic.resend(record, now, inventory.at)
            if again is None:
                continue  # its agent has it to apply
            logger.info("resync %s: %s (generation %d) asked of its agent again", cluster, k, record.generation)
            try:
                await self.desired.write(k, again, revision, replaces=record)
            except Conflict:
                continue  # written meanwhile: that write is the one the agent applies
            await progress.tick()

    async def _delete_orphans(
        self, cluster: str, orphans: Sequence[InventoryItem], seen_at: float, now: float, progress: Progress
    ) -> None:
        for item in orphans:
            k = workload_key(item)
            found = await self.desired.get(k)
            if found is not None and logic.deleted_since(found[0], seen_at):
                continue  # deleted since the snapshot: the next inventory lacks it
            if found is not None and not logic.is_tombstone(found[0]):
                if found[0].spec.cluster != cluster:
                    # Live elsewhere: a deletion here would become the name's newest record. Left for the
                    # cluster's operator (an object restored on a cluster the name has left).
                    logger.warning(
                        "resync %s: %s is live on %s; not deleting it here", cluster, k, found[0].spec.cluster
                    )
                continue  # else created since the snapshot: wanted, not an orphan
            logger.info("resync %s: deleting unknown %s", cluster, ref_of(item))
            previous = found[0] if found is not None else None
            deletion = logic.orphan_deletion(item, cluster, previous, f"orphan-{new_op_id()}", now)
            try:
                await self.desired.write(k, deletion, found[1] if found is not None else None)
            except Conflict:
                continue  # written meanwhile: the next inventory decides again
            await progress.tick()

    async def _confirm_deleted(
        self, cluster: str, done: Sequence[WorkloadRecord], now: float, progress: Progress
    ) -> None:
        for record in done:
            k = workload_key(record.spec)
            found = await self.desired.get(k)
            if found is None or found[0].generation != record.generation or found[0].spec.cluster != cluster:
                continue
            await self.desired.write(k, logic.confirm_deleted(found[0], now), found[1])
            await self.sender.announce_deleted(record)
            await self.sender.superseded(found[0], found[0].earlier, by=found[0].op_id)
            await progress.tick()

    async def _record_activity(
        self, cluster: str, desired: list[WorkloadRecord], inventory: Inventory, now: float, progress: Progress
    ) -> None:
        for k, at in logic.activity_updates(desired, inventory.items, now).items():
            found = await self.desired.get(k)
            if found is None or found[0].spec.cluster != cluster:
                continue
            touched = logic.touch(found[0], at, now)
            if touched is not None:
                try:
                    await self.desired.write(k, touched, found[1], replaces=found[0])
                except Conflict:
                    pass  # someone else wrote it; activity is advisory
            await progress.tick()
