"""Consumer hijack: the platform creates each agent's consumer of the desired state with exactly its filter,
on its cluster's bucket's stream; the agent may look it up, fetch from it and ack, and nothing else, whether
the victim's records are in the attacker's bucket or in another."""

from __future__ import annotations

import json

from schemas import subjects
from tests.hostile.conftest import OTHER_BUCKET, SAME_BUCKET, Hostile, both_layouts


def test_the_attackers_cover_both_layouts() -> None:
    victim = subjects.desired_bucket(Hostile.victim)
    assert subjects.desired_bucket(OTHER_BUCKET) != victim
    assert subjects.desired_bucket(SAME_BUCKET) == victim


@both_layouts
async def test_an_agent_cannot_create_change_or_delete_a_consumer(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    own_stream, own = subjects.desired_stream(h.attacker), subjects.agent_consumer(h.attacker)
    victim_stream, victim = subjects.desired_stream(h.victim), subjects.agent_consumer(h.victim)
    wider = f"{subjects.desired_prefix(h.attacker)}>"
    refilter = json.dumps(
        {"stream_name": own_stream, "config": {"durable_name": own, "filter_subject": wider}}
    ).encode()
    onto_victim = json.dumps(
        {
            "stream_name": own_stream,
            "config": {"durable_name": own, "filter_subject": subjects.desired_records(h.victim)},
        }
    ).encode()
    attempts = {
        "re-filter its own consumer": (f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}", refilter),
        "re-filter it (filtered form)": (
            f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}.{subjects.desired_records(h.attacker)}",
            refilter,
        ),
        "re-filter it wider (filtered form)": (f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}.{wider}", refilter),
        "re-filter it onto the victim's records": (
            f"$JS.API.CONSUMER.CREATE.{own_stream}.{own}.{subjects.desired_records(h.victim)}",
            onto_victim,
        ),
        "re-create it (durable form)": (f"$JS.API.CONSUMER.DURABLE.CREATE.{own_stream}.{own}", refilter),
        "delete its own consumer": (f"$JS.API.CONSUMER.DELETE.{own_stream}.{own}", b""),
        "squat another name": (f"$JS.API.CONSUMER.CREATE.{own_stream}.agent-later", refilter),
        "its own name on the victim's stream, on the victim's records": (
            f"$JS.API.CONSUMER.CREATE.{victim_stream}.{own}.{subjects.desired_records(h.victim)}",
            onto_victim,
        ),
        "its own name on the victim's stream (durable form)": (
            f"$JS.API.CONSUMER.DURABLE.CREATE.{victim_stream}.{own}",
            onto_victim,
        ),
        "take the victim's commands": (f"$JS.API.CONSUMER.CREATE.{victim_stream}.{victim}", refilter),
        "delete the victim's consumer": (f"$JS.API.CONSUMER.DELETE.{victim_stream}.{victim}", b""),
        "an ephemeral consumer": (f"$JS.API.CONSUMER.CREATE.{own_stream}", refilter),
        "an ephemeral consumer on the victim's stream": (f"$JS.API.CONSUMER.CREATE.{victim_stream}", onto_victim),
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
        # Not on its bucket's stream, nor on any other.
        for stream in subjects.DESIRED_STREAMS:
            names = [c.name for c in await platform.jetstream().consumers_info(stream)]
            assert subjects.agent_consumer(h.attacker) not in names, stream
    finally:
        await platform.close()
    await h.intact()
