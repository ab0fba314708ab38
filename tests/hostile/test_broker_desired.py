"""The desired state is one bucket for every cluster; an agent reads only its own cluster's records, through
the consumer the platform made for it. With its own real credentials, every other way in is refused by the
broker: a message get, a direct get, a consumer of its own with a wider filter, another cluster's consumer."""

from __future__ import annotations

import json

from schemas import subjects
from tests.hostile.conftest import Hostile


async def test_an_agent_cannot_read_another_clusters_desired_state(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    stream, prefix = subjects.DESIRED_STREAM, subjects.DESIRED_PREFIX
    victims = f"{prefix}{h.victim}.space.p1.before"  # the record the fixture applied on the victim
    wider = json.dumps(
        {"stream_name": stream, "config": {"name": "mine", "filter_subject": f"{prefix}>", "deliver_policy": "all"}}
    ).encode()
    attempts = {
        "a message get of the victim's record": (
            f"$JS.API.STREAM.MSG.GET.{stream}",
            json.dumps({"last_by_subj": victims}).encode(),
        ),
        "a message get across clusters": (
            f"$JS.API.STREAM.MSG.GET.{stream}",
            json.dumps({"last_by_subj": f"{prefix}*.space.p1.before"}).encode(),
        ),
        "a direct get (subject form)": (f"$JS.API.DIRECT.GET.{stream}.{victims}", b""),
        "a direct get (request form)": (f"$JS.API.DIRECT.GET.{stream}", json.dumps({"last_by_subj": victims}).encode()),
        "a consumer with a wider filter": (f"$JS.API.CONSUMER.CREATE.{stream}.mine.{prefix}>", wider),
        "a consumer on the victim's records": (
            f"$JS.API.CONSUMER.CREATE.{stream}.mine.{subjects.desired_records(h.victim)}",
            wider,
        ),
        "an ephemeral consumer": (f"$JS.API.CONSUMER.CREATE.{stream}", wider),
        "pull from the victim's consumer": (
            f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{subjects.agent_consumer(h.victim)}",
            b"{}",
        ),
        "ack on the victim's consumer": (f"$JS.ACK.{stream}.{subjects.agent_consumer(h.victim)}.1.1.1.0.0", b""),
        "the stream's info": (f"$JS.API.STREAM.INFO.{stream}", b""),
        "subscribe-free read of the KV subjects": (f"{prefix}{h.victim}.space.p1.before", b"{}"),
    }
    await h.all_refused(nc, attempts)
    # Nor can it listen on the bucket's subjects (a KV watch is a subscription).
    before = len(h.errors)
    await nc.subscribe(f"{prefix}>")
    await nc.flush()
    await h.refused("a subscription to the bucket's subjects", before)
    await h.intact()
    await h.legit_command_applies()
