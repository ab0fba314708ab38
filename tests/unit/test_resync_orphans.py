"""Lifecycle's inventory resync, on the in-memory bus: an inventory taken before a deletion finished does not
ask for that object's deletion again (a generation no operation asked for, seen once in the clustered fault
test); one taken after it, still listing the object, does (an object restored on the cluster by hand)."""

from __future__ import annotations

import time

from schemas import subjects
from schemas.messages import Inventory, InventoryItem, WorkloadName, WorkloadRef, desired_key, encode, workload_key
from services.bus.interface import Delivery
from services.bus.memory import MemoryBus
from services.lifecycle import logic
from services.lifecycle.service import Lifecycle, Settings
from services.lifecycle.shards import open_shards
from tests.lifecycle_records import new_tenant

K = workload_key(WorkloadRef(kind="tenant", project="p1", name="t1"))


def inventory_of(at: float, generation: int) -> Delivery:
    listed = InventoryItem(kind="tenant", project="p1", name="t1", generation=generation, state="sleeping")
    live = InventoryItem(kind="tenant", project="p1", name="t2", generation=1, state="running")
    inventory = Inventory(cluster="c1", items=(listed, live), at=at, reason="connect")
    return Delivery(subjects.evt("c1", subjects.EVT_INVENTORY), encode(inventory))


async def test_an_object_deleted_after_the_inventory_was_taken_is_no_orphan() -> None:
    bus = MemoryBus()
    await bus.declare_streams("platform", "commands")
    shards, names = await open_shards(bus), await bus.bucket(subjects.BUCKET_WORKLOAD_NAMES, WorkloadName)
    lifecycle = Lifecycle(Settings(), bus, shards, names)
    bucket = shards.of("c1")
    now = time.time()
    deleting = logic.act(new_tenant("0" * 32), "delete", "", "1" * 32, now - 2)
    assert deleting is not None
    tomb = logic.confirm_deleted(deleting, now - 1)  # the cluster reported it gone a second ago
    await bucket.create(desired_key("c1", K), tomb)
    await names.create(K, WorkloadName(cluster="c1", at=now - 2))
    # Another tenant lives there: a cluster whose desired state is empty has its deletes held back anyway.
    other = new_tenant("2" * 32, name="t2")
    k2 = workload_key(WorkloadRef(kind="tenant", project="p1", name="t2"))
    await bucket.create(desired_key("c1", k2), other)
    await names.create(k2, WorkloadName(cluster="c1", at=now - 2))

    await lifecycle.resync.on_inventory(inventory_of(at=now - 1.5, generation=1))  # taken before that
    found = await lifecycle.desired.get(K)
    assert found is not None and found[0] == tomb, "no deletion asked for again"

    await lifecycle.resync.on_inventory(inventory_of(at=now, generation=1))  # taken after: it is back
    found = await lifecycle.desired.get(K)
    assert found is not None and found[0].operation == "resync" and found[0].generation == tomb.generation + 1
