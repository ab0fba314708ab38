"""Consumer hijack: the platform creates each agent's consumer of the desired state with exactly its filter;
the agent may look it up, fetch from it and ack, and nothing else."""

from __future__ import annotations

import json

from schemas import subjects
from tests.hostile.conftest import Hostile


async def test_an_agent_cannot_create_change_or_delete_a_consumer(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    own_stream, own = subjects.DESIRED_STREAM, subjects.agent_consumer(h.attacker)
    victim_stream, victim = subjects.DESIRED_STREAM, subjects.agent_consumer(h.victim)
    refilter = json.dumps(
        {"stream_name": own_stream, "config": {"durable_name": own, "filter_subject": f"{subjects.DESIRED_PREFIX}>"}}
    ).encode()
    attempts = {
        "re-filter its own consumer": (f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}", refilter),
        "re-filter it (filtered form)": (
            f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}.{subjects.desired_records(h.attacker)}",
            refilter,
        ),
        "re-create it (durable form)": (f"$JS.API.CONSUMER.DURABLE.CREATE.{own_stream}.{own}", refilter),
        "delete its own consumer": (f"$JS.API.CONSUMER.DELETE.{own_stream}.{own}", b""),
        "squat another name": (f"$JS.API.CONSUMER.CREATE.{own_stream}.agent-later", refilter),
        "take the victim's commands": (f"$JS.API.CONSUMER.CREATE.{victim_stream}.{victim}", refilter),
        "delete the victim's consumer": (f"$JS.API.CONSUMER.DELETE.{victim_stream}.{victim}", b""),
        "an ephemeral consumer": (f"$JS.API.CONSUMER.CREATE.{own_stream}", refilter),
        "pull the victim's consumer": (f"$JS.API.CONSUMER.MSG.NEXT.{victim_stream}.{victim}", b"{}"),
        "look at the victim's consumer": (f"$JS.API.CONSUMER.INFO.{victim_stream}.{victim}", b""),
    }
    await h.all_refused(nc, attempts)
    # Its own consumer can still be looked up, as its agent does.
    info = await nc.jetstream().consumer_info(own_stream, own)
    assert info.config.filter_subject == subjects.desired_records(h.attacker)
    await h.intact()
    await h.legit_command_applies()


async def test_disconnect_deletes_the_consumer_and_a_new_agent_gets_a_fresh_one(hostile: Hostile) -> None:
    h = hostile
    await h.stack.ok("POST", f"/api/v1/clusters/{h.attacker}/disconnect")
    platform = await h.stack.nc()
    try:
        names = [c.name async for c in _consumers(platform, subjects.DESIRED_STREAM)]
        assert subjects.agent_consumer(h.attacker) not in names
    finally:
        await platform.close()
    await h.intact()


async def _consumers(nc, stream):  # type: ignore[no-untyped-def]
    for info in await nc.jetstream().consumers_info(stream):
        yield info
