"""Public phase events against a real nats-server's EVENTS stream, whose duplicate window drops a message id
seen in the last two minutes: a phase entered again at one generation is announced again, and a result
recorded twice is announced once."""

from __future__ import annotations

import msgspec
from nats.aio.client import Client

from schemas import subjects
from schemas.messages import (
    WorkloadEvent,
    WorkloadName,
    WorkloadRef,
    desired_key,
    workload_key,
)
from services.bus import Bus
from services.lifecycle.service import Lifecycle, Settings
from services.lifecycle.shards import open_shards
from tests.lifecycle_records import new_tenant, report

KEY = desired_key("c1", workload_key(WorkloadRef(kind="tenant", project="p1", name="t1")))


async def stored_phases(nc: Client) -> list[str]:
    """The tenant events the EVENTS stream holds, oldest first."""
    js = nc.jetstream()
    info = await js.stream_info(subjects.EVENTS_STREAM)
    phases = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(subjects.EVENTS_STREAM, seq)
        if msg.subject.startswith(subjects.public_event("tenant.")):
            phases.append(msgspec.json.decode(msg.data or b"", type=WorkloadEvent).phase)
    return phases


async def test_a_phase_entered_again_at_one_generation_is_announced_again(lifecycle_bus: Bus, nc: Client) -> None:
    await lifecycle_bus.declare_streams("platform", "commands")
    shards = await open_shards(lifecycle_bus)
    names = await lifecycle_bus.bucket(subjects.BUCKET_WORKLOAD_NAMES, WorkloadName)
    lifecycle = Lifecycle(Settings(), lifecycle_bus, shards, names)
    created = new_tenant("0" * 32)
    await names.create(workload_key(created.spec), WorkloadName(cluster="c1", at=0.0))
    await shards.of("c1").create(KEY, created)

    # Ready; its control plane restarts (Pending, same generation); Ready again, all within seconds.
    for settled in (True, False, True):
        assert (
            await lifecycle.results.record(
                report(created, settled=settled, reason="" if settled else "ControlPlaneRestarting"), "c1"
            )
        ).outcome == "recorded"
    # The agent asks again after a lost answer: nothing new to say.
    assert (await lifecycle.results.record(report(created, settled=True), "c1")).outcome == "already"

    assert await stored_phases(nc) == ["Ready", "Pending", "Ready"]
