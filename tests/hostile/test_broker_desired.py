"""The desired state is 16 buckets, each holding the records of the clusters its name picks (``desired_bucket``);
an agent reads only its own cluster's records, through the consumer the platform made for it on its bucket's
stream. With its own real credentials, every other way in is refused by the broker, whether the victim's
records are in the attacker's bucket or in another: a message get, a direct get, a consumer of its own with a
wider filter or on the victim's records, another cluster's consumer, a write into either bucket."""

from __future__ import annotations

import json

from schemas import subjects
from tests.hostile.conftest import Hostile, both_layouts


@both_layouts
async def test_an_agent_cannot_read_another_clusters_desired_state(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    stream, prefix = subjects.desired_stream(h.victim), subjects.desired_prefix(h.victim)
    own_stream, own_prefix = subjects.desired_stream(h.attacker), subjects.desired_prefix(h.attacker)
    victims = f"{prefix}{h.victim}.space.p1.before"  # the record the fixture applied on the victim
    wider = json.dumps(
        {"stream_name": stream, "config": {"name": "mine", "filter_subject": f"{prefix}>", "deliver_policy": "all"}}
    ).encode()
    own_wider = json.dumps(
        {
            "stream_name": own_stream,
            "config": {"name": "mine", "filter_subject": f"{own_prefix}>", "deliver_policy": "all"},
        }
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
        "subscribe-free read of the KV subjects": (victims, b"{}"),
        # Its own bucket's stream (the victim's too when they share one): no read but through its consumer.
        "a message get on its own bucket": (
            f"$JS.API.STREAM.MSG.GET.{own_stream}",
            json.dumps({"last_by_subj": f"{own_prefix}*.space.p1.before"}).encode(),
        ),
        "a direct get on its own bucket": (
            f"$JS.API.DIRECT.GET.{own_stream}.{own_prefix}{h.victim}.space.p1.before",
            b"",
        ),
        "a consumer with a wider filter on its own bucket": (
            f"$JS.API.CONSUMER.CREATE.{own_stream}.mine.{own_prefix}>",
            own_wider,
        ),
        "a consumer on its own bucket filtered on the victim's records": (
            f"$JS.API.CONSUMER.CREATE.{own_stream}.mine.{subjects.desired_records(h.victim)}",
            own_wider,
        ),
        "an ephemeral consumer on its own bucket": (f"$JS.API.CONSUMER.CREATE.{own_stream}", own_wider),
        "its own bucket's stream info": (f"$JS.API.STREAM.INFO.{own_stream}", b""),
        "a record of the victim written into its own bucket": (f"{own_prefix}{h.victim}.space.p1.before", b"{}"),
        "a record of its own written": (f"{own_prefix}{h.attacker}.space.p1.mine", b"{}"),
    }
    await h.all_refused(nc, attempts)
    # Nor can it listen on either bucket's subjects (a KV watch is a subscription).
    for listened in dict.fromkeys((f"{prefix}>", f"{own_prefix}>")):
        before = len(h.errors)
        await nc.subscribe(listened)
        await nc.flush()
        await h.refused(f"a subscription to {listened}", before)
    await h.intact()
    await h.legit_command_applies()
