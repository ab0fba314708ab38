"""What every ``Bus`` does (``services/bus/interface.py``), checked on both buses (see conftest)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from schemas.errors import Conflict, InvalidInput, NotFound, Unavailable
from schemas.messages import ClusterEvent, Empty, MessageDropped, NameRequest, Presence
from services.bus import Bus, Consumer, Delivery, Endpoints
from services.bus.consuming import MAX_DELIVER
from services.bus.limits import PayloadTooLarge
from services.platform.natsd import NatsServer
from tests.harness import monitor, wait_for

ECHO = "tether.svc.contract.echo"
BIG = "tether.svc.contract.big"
HELLO = "tether.svc.contract.agent.hello"


def event(cluster: str, kind: str = "connected") -> ClusterEvent:
    return ClusterEvent(kind=kind, cluster=cluster, at=time.time())  # type: ignore[arg-type]


async def echo(req: NameRequest) -> NameRequest:
    if req.name == "missing":
        raise NotFound("no such thing")
    return NameRequest(name=req.name.upper())


async def hello(req: NameRequest, cluster: str) -> NameRequest:
    return NameRequest(name=f"{req.name}@{cluster}")


def served(bus: Bus) -> Endpoints:
    endpoints = Endpoints()
    endpoints.platform(ECHO, NameRequest, echo)
    endpoints.platform(BIG, Empty, lambda _req: _big(bus))
    endpoints.agent(HELLO, NameRequest, hello)
    return endpoints


async def _big(bus: Bus) -> NameRequest:
    return NameRequest(name="x" * bus.max_payload)


class Inbox:
    """Everything arriving on one subject."""

    def __init__(self) -> None:
        self.got: list[Delivery] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.got.append(delivery)


async def test_call_answers_and_errors_cross_as_their_kind(bus: Bus) -> None:
    host = await bus.serve("contract", "1.0.0", served(bus))
    try:
        assert await bus.call(ECHO, NameRequest(name="a"), NameRequest) == NameRequest(name="A")
        with pytest.raises(NotFound, match="no such thing"):
            await bus.call(ECHO, NameRequest(name="missing"), NameRequest)
        with pytest.raises(InvalidInput):  # the request is not what the endpoint takes
            await bus.call(ECHO, Empty(), NameRequest)
        with pytest.raises(Unavailable):
            await bus.call("tether.svc.contract.nobody", Empty(), Empty, timeout=0.5)
        assert await bus.ping("contract")
    finally:
        await host.stop()
        await host.stop()  # twice: harmless
    assert not await bus.ping("contract", timeout=0.3)


async def test_a_served_endpoint_is_subscribed_when_serve_returns(bus: Bus, server: NatsServer | None) -> None:
    """A service says it is ready once ``serve`` returns; a request from another connection may come at once."""
    host = await bus.serve("contract", "1.0.0", served(bus))
    try:
        if server is not None:
            # Looked at without an await in between: nothing of this process ran after serve returned.
            listed = monitor(server, "/subsz?subs=1") or {}
            assert ECHO in {sub.get("subject") for sub in listed.get("subscriptions_list", [])}
        assert await bus.call(ECHO, NameRequest(name="a"), NameRequest) == NameRequest(name="A")
    finally:
        await host.stop()


async def test_a_subscription_counts_what_it_drops_past_its_pending_limit(bus: Bus) -> None:
    """A handler that cannot keep up: past ``pending_limit`` waiting, messages are dropped and counted, so
    a sample of ``pending`` taken once the inbox is empty again still tells that some were lost."""
    release, handled = asyncio.Event(), Inbox()

    async def slow(delivery: Delivery) -> None:
        await release.wait()
        await handled(delivery)

    sub = await bus.subscribe("tether.contract.slow", slow, pending_limit=5)
    try:
        assert sub.dropped == 0
        await bus.send_many([("tether.contract.slow", NameRequest(name=str(i))) for i in range(50)])
        await wait_for(lambda: sub.dropped + sub.pending >= 49, timeout=5, what="the burst received")
        assert sub.dropped >= 40
        release.set()
        await wait_for(lambda: len(handled.got) + sub.dropped == 50, timeout=5, what="the rest handled")
        assert sub.pending == 0 and sub.dropped >= 40  # still told once nothing waits
    finally:
        await sub.stop()


async def test_replies_go_only_to_inboxes_the_caller_may_read(bus: Bus) -> None:
    host = await bus.serve("contract", "1.0.0", served(bus))
    stolen, mine = Inbox(), Inbox()
    subs = [await bus.subscribe("evil.>", stolen), await bus.subscribe(f"{agent_inbox_prefix('c1')}.>", mine)]
    try:
        await bus.send(ECHO, NameRequest(name="a"), reply="evil.inbox")
        # An agent's call is answered only into its own cluster's inbox, with the cluster of the subject.
        await bus.send(subjects.agent_call(HELLO, "c1"), NameRequest(name="hi"), reply=f"{agent_inbox_prefix('c1')}.1")
        await bus.send(subjects.agent_call(HELLO, "c1"), NameRequest(name="hi"), reply="_INBOX.platform")
        await bus.send(subjects.agent_call(HELLO, "c2"), NameRequest(name="hi"), reply=f"{agent_inbox_prefix('c1')}.2")
        await wait_for(lambda: host.refused_replies == 3, what="three refused replies", timeout=5)
        await wait_for(lambda: len(mine.got) == 1, what="the agent's answer", timeout=5)
        assert mine.got[0].decode(NameRequest) == NameRequest(name="hi@c1")
        await asyncio.sleep(0.2)
        assert stolen.got == [] and len(mine.got) == 1
    finally:
        for sub in subs:
            await sub.stop()
        await host.stop()


async def test_a_message_over_the_payload_limit_is_refused_and_the_bus_stays(bus: Bus) -> None:
    host = await bus.serve("contract", "1.0.0", served(bus))
    try:
        with pytest.raises(PayloadTooLarge):
            await bus.send("contract.big", b"x" * (bus.max_payload + 1))
        with pytest.raises(PayloadTooLarge):
            await bus.publish(subjects.public_event("contract.big"), NameRequest(name="x" * bus.max_payload))
        # An answer too large to send becomes an error for the caller, not a dead connection.
        with pytest.raises(Exception, match="too large to send"):
            await bus.call(BIG, Empty(), NameRequest)
        assert bus.connected
        assert await bus.call(ECHO, NameRequest(name="still"), NameRequest) == NameRequest(name="STILL")
    finally:
        await host.stop()


async def test_a_history_longer_than_a_batch_is_read_whole_and_leaves_no_consumer(
    bus: Bus, server: NatsServer | None
) -> None:
    """600 events (three fetches' worth): every one, in order; the read's consumer is gone once it returns."""
    start = datetime.now(UTC) - timedelta(seconds=1)
    for i in range(600):
        await bus.publish(subjects.public_event("cluster.connected"), event(f"c{i}"))
    stored = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), start, ClusterEvent)
    assert [e.cluster for e in stored] == [f"c{i}" for i in range(600)]
    kept = await bus.read_since(
        subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), start, ClusterEvent, limit=10
    )
    assert [e.cluster for e in kept] == [f"c{i}" for i in range(10)]
    if server is not None:
        streams = (monitor(server, "/jsz?streams=true&consumers=true") or {}).get("account_details") or []
        consumers = [
            c["name"]
            for account in streams
            for stream in account.get("stream_detail") or []
            if stream["name"] == subjects.EVENTS_STREAM
            for c in stream.get("consumer_detail") or []
        ]
        assert not [c for c in consumers if c.startswith("read-")], consumers


async def test_the_stream_drops_a_duplicate_id_and_keeps_the_rest_for_reading(bus: Bus) -> None:
    seen = Inbox()
    sub = await bus.subscribe(subjects.public_event("cluster.*"), seen)
    start = datetime.now(UTC) - timedelta(seconds=1)
    try:
        first = event("c1")
        assert await bus.publish(subjects.public_event("cluster.connected"), first, msg_id="once")
        assert not await bus.publish(subjects.public_event("cluster.connected"), event("c2"), msg_id="once")
        assert await bus.publish(subjects.public_event("cluster.offline"), event("c3", "offline"))
        stored = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), start, ClusterEvent)
        assert [e.cluster for e in stored] == ["c1", "c3"]
        only = await bus.read_since(
            subjects.EVENTS_STREAM, subjects.public_event(">"), start, ClusterEvent, keep=lambda e: e.kind == "offline"
        )
        assert [e.cluster for e in only] == ["c3"]
        later = datetime.now(UTC) + timedelta(seconds=5)
        assert await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event(">"), later, ClusterEvent) == []
        # Deduplication is the stream's: a subscriber hears every publish.
        await wait_for(lambda: len(seen.got) == 3, what="every publish to reach the subscriber", timeout=5)
    finally:
        await sub.stop()
        await sub.stop()


async def test_durable_consume_retries_within_bounds_and_drops_poison(bus: Bus) -> None:
    """A message that keeps failing is terminated after MAX_DELIVER deliveries, one that can never be handled
    at once; each is announced as message.dropped; the others are handled once, and an acknowledged message
    is not delivered again when the durable consumer resumes."""
    tries: dict[str, int] = {}
    dropped = Inbox()
    sub = await bus.subscribe(subjects.MESSAGE_DROPPED, dropped)

    async def handle(delivery: Delivery) -> None:
        e = delivery.decode(ClusterEvent)
        tries[e.cluster] = tries.get(e.cluster, 0) + 1
        # At least: a message handed to a fetch that was cancelled (the consumer stopping) counts too.
        assert delivery.deliveries >= tries[e.cluster] and delivery.stream_seq > 0
        if e.cluster == "flaky":
            raise Unavailable("not now")
        if e.cluster == "bad":
            raise InvalidInput("never")

    consumer = Consumer(
        stream=subjects.EVENTS_STREAM,
        durable="contract",
        filter_subject=subjects.public_event("contract.*"),
        retry_base=0.05,
        ack_wait=5.0,
    )
    for cluster in ("flaky", "bad", "good"):
        await bus.publish(subjects.public_event("contract.x"), event(cluster))
    task = asyncio.create_task(bus.consume(consumer, handle))
    try:
        await wait_for(lambda: len(dropped.got) == 2, what="two dropped messages", timeout=30)
        assert tries == {"flaky": MAX_DELIVER, "bad": 1, "good": 1}
        reasons = {d.decode(MessageDropped).deliveries: d.decode(MessageDropped) for d in dropped.got}
        assert set(reasons) == {1, MAX_DELIVER} and reasons[1].consumer == "contract"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await bus.publish(subjects.public_event("contract.x"), event("after"))
    task = asyncio.create_task(bus.consume(consumer, handle))
    try:
        await wait_for(lambda: tries.get("after") == 1, what="the new message", timeout=15)
        await asyncio.sleep(0.3)
        assert tries == {"flaky": MAX_DELIVER, "bad": 1, "good": 1, "after": 1}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await sub.stop()


def presence(cluster: str, n: int) -> Presence:
    return Presence(cluster=cluster, online=True, last_seen=float(n))


async def test_buckets_write_compare_and_set(bus: Bus) -> None:
    records = await bus.bucket("tether-contract", Presence, history=5)
    first = await records.create("c1", presence("c1", 0))
    with pytest.raises(Conflict):
        await records.create("c1", presence("c1", 1))
    second = await records.update("c1", presence("c1", 1), first)
    with pytest.raises(Conflict):
        await records.update("c1", presence("c1", 2), first)
    assert await records.get("c1") == (presence("c1", 1), second)

    def bump(current: Presence | None) -> Presence:
        assert current is not None
        return presence("c1", int(current.last_seen) + 1)

    await asyncio.gather(*(records.mutate("c1", bump) for _ in range(5)))
    found = await records.get("c1")
    assert found is not None and found[0].last_seen == 6.0, "no concurrent change was lost"
    await records.put("c2", presence("c2", 0))
    assert set(await records.items()) == {"c1", "c2"}
    await records.purge("c2")
    await records.delete("c1")
    assert await records.get("c1") is None and await records.items() == {}
    await records.create("c1", presence("c1", 9))  # a deleted key can be created again
    assert await records.keys() == ["c1"]


async def test_a_key_family_is_read_and_written_as_one(bus: Bus) -> None:
    """``latest`` over ``*.<name>`` names the newest entry across first tokens (a deletion marker too), and
    ``write_over`` is one compare-and-set across them: a stale writer under another first token loses."""
    records = await bus.bucket("tether-contract-family", Presence, history=5)
    assert await records.latest("*.t.p.n") is None
    a = await records.write_over("a.t.p.n", presence("a", 1), "*.t.p.n", 0)
    with pytest.raises(Conflict):
        await records.write_over("b.t.p.n", presence("b", 1), "*.t.p.n", 0)  # a second create elsewhere
    b = await records.write_over("b.t.p.n", presence("b", 2), "*.t.p.n", a)  # moved on purpose
    with pytest.raises(Conflict):
        await records.write_over("a.t.p.n", presence("a", 3), "*.t.p.n", a)  # the old place, stale
    await records.put("a.t.p.other", presence("a", 9))  # another name: not in the family
    latest = await records.latest("*.t.p.n")
    assert latest is not None and (latest.key, latest.record, latest.revision) == ("b.t.p.n", presence("b", 2), b)
    await records.delete("b.t.p.n")
    marker = await records.latest("*.t.p.n")
    assert marker is not None and marker.key == "b.t.p.n" and marker.record is None and marker.revision > b
    with pytest.raises(Conflict):
        await records.write_over("c.t.p.n", presence("c", 1), "*.t.p.n", b)  # the marker is newer
    await records.write_over("c.t.p.n", presence("c", 1), "*.t.p.n", marker.revision)
    assert await records.get("a.t.p.n") == (presence("a", 1), a)  # the old place keeps its own last value
