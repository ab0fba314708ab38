"""A bucket kept in the process (``Records.view``), on both buses (see conftest): loaded once, then fresh with
every write of another process within a deadline, and with this process's own writes at once; on NATS also
after its consumer is lost and after a restart of nats-server."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import nats.errors
import pytest
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from schemas.messages import Presence
from services.bus import Bus, BusSettings, Records
from services.bus.kv import Bucket
from services.bus.nats_bus import NatsBus
from services.bus.records import View
from services.bus.watching import BucketWatch
from services.platform.natsd import NatsServer
from tests.harness import wait_for

BUCKET = "tether-contract-view"
DEADLINE = 5.0
"""Seconds a write of another process may take to appear in a view on a healthy bus."""


def presence(cluster: str, n: int, online: bool = True) -> Presence:
    return Presence(cluster=cluster, online=online, last_seen=float(n))


@pytest.fixture
async def other(bus: Bus, server: NatsServer | None) -> AsyncIterator[Bus]:
    """Another process's connection (on the memory bus, the one bus every service shares)."""
    if server is None:
        yield bus
        return
    theirs = await NatsBus.connect(BusSettings(url=server.url), "contract-other")
    try:
        yield theirs
    finally:
        await theirs.close()


async def appears(view: View[Presence], key: str, want: Presence | None, what: str) -> None:
    await wait_for(lambda: view.get(key) == want, timeout=DEADLINE, what=what)
    assert view.get(key) == want


async def test_a_view_loads_the_bucket_then_follows_another_process_writes(bus: Bus, other: Bus) -> None:
    mine = await bus.bucket(BUCKET, Presence, history=5)
    theirs = await other.bucket(BUCKET, Presence, history=5)
    for n in range(1, 4):
        await theirs.put(f"c{n}", presence(f"c{n}", n))
    await theirs.put("c1", presence("c1", 10))  # its last entry counts
    await theirs.delete("c3")  # a key deleted before the view: not in it
    view = await mine.view()
    try:
        assert view.items() == {"c1": presence("c1", 10), "c2": presence("c2", 2)}
        await theirs.put("c4", presence("c4", 4))
        await appears(view, "c4", presence("c4", 4), "another process's new key")
        first = await theirs.get("c2")
        assert first is not None
        await theirs.update("c2", presence("c2", 20), first[1])
        await appears(view, "c2", presence("c2", 20), "another process's update")
        await theirs.delete("c2")
        await appears(view, "c2", None, "another process's delete")
        await theirs.purge("c1")
        await appears(view, "c1", None, "another process's purge")
        await theirs.create("c3", presence("c3", 30))  # created again after its deletion
        await appears(view, "c3", presence("c3", 30), "a key created again")
        assert view.items() == {"c3": presence("c3", 30), "c4": presence("c4", 4)}
    finally:
        await view.stop()


async def test_own_writes_show_at_once_and_their_echoes_never_take_them_back(bus: Bus) -> None:
    records = await bus.bucket(BUCKET, Presence, history=5)
    view = await records.view()
    try:
        # No await between a write and the look: the view has it when the write is acknowledged.
        created = await records.create("c1", presence("c1", 1))
        assert view.get("c1") == presence("c1", 1)
        await records.update("c1", presence("c1", 2), created)
        assert view.get("c1") == presence("c1", 2)
        await records.write_over("c1", presence("c1", 3), "c1", created + 1)
        assert view.get("c1") == presence("c1", 3)
        await records.delete("c1")
        assert view.get("c1") is None
        await records.put("c2", presence("c2", 1))
        await records.purge("c2")
        assert view.get("c2") is None
        last = await records.put("c1", presence("c1", 4))
        assert view.get("c1") == presence("c1", 4)
        # The watch then brings every one of those writes again, in order: none of them goes back.
        await wait_for(lambda: view.position >= last, timeout=DEADLINE, what="the watch's echo of the last write")
        assert view.items() == {"c1": presence("c1", 4)}
    finally:
        await view.stop()


async def test_a_caught_up_view_holds_every_write_acknowledged_before(bus: Bus, other: Bus) -> None:
    """What a list right after another replica's create relies on: no deadline, no polling."""
    mine = await bus.bucket(BUCKET, Presence, history=5)
    theirs = await other.bucket(BUCKET, Presence, history=5)
    view = await mine.view()
    try:
        await view.caught_up()  # nothing written: at once
        for n in range(20):
            await theirs.put(f"c{n}", presence(f"c{n}", n))
            await view.caught_up()
            assert view.get(f"c{n}") == presence(f"c{n}", n)
        await theirs.delete("c0")
        await view.caught_up()
        assert view.get("c0") is None and len(view) == 19
    finally:
        await view.stop()


async def test_a_view_leaves_out_what_it_does_not_keep(bus: Bus, other: Bus) -> None:
    mine = await bus.bucket(BUCKET, Presence, history=5)
    theirs = await other.bucket(BUCKET, Presence, history=5)
    await theirs.put("c1", presence("c1", 1, online=False))
    view = await mine.view(lambda _key, record: record.online)
    try:
        assert len(view) == 0
        await theirs.put("c1", presence("c1", 2))
        await appears(view, "c1", presence("c1", 2), "a record it keeps")
        await mine.put("c1", presence("c1", 3, online=False))  # one it no longer keeps: gone, like a delete
        assert view.get("c1") is None and view.values() == []
    finally:
        await view.stop()


def _watch(records: Records[Presence]) -> Bucket[Presence]:
    assert isinstance(records, Bucket)
    return records


@contextlib.asynccontextmanager
async def _consumer_lost(
    bus: Bus, other: Bus, server: NatsServer | None, probe: float
) -> AsyncIterator[tuple[BucketWatch[Presence], Records[Presence]]]:
    """A view loaded with c1 whose consumer is then deleted on the server while the connection stays (its node
    failed, a leader change moved the stream), and another process's bucket to write with."""
    if server is None:
        pytest.skip("the memory bus's view has no consumer to lose")
    mine = _watch(await bus.bucket(BUCKET, Presence, history=5))
    theirs = await other.bucket(BUCKET, Presence, history=5)
    await theirs.put("c1", presence("c1", 1))
    view = await mine.view(probe=probe)
    assert isinstance(view, BucketWatch)
    try:
        await view._js.delete_consumer(view._stream, view._sub._consumer)  # type: ignore[union-attr]
        yield view, theirs
    finally:
        await view.stop()


async def test_a_lost_consumer_is_made_again_from_where_the_view_was(
    bus: Bus, other: Bus, server: NatsServer | None
) -> None:
    """nats-py misses its heartbeats and makes the consumer again, or the watchdog does; no write is missed."""
    async with _consumer_lost(bus, other, server, probe=1.0) as (view, theirs):
        await theirs.put("c2", presence("c2", 2))
        await theirs.delete("c1")
        await wait_for(
            lambda: view.get("c2") == presence("c2", 2) and view.get("c1") is None,
            timeout=15,
            what="the writes made after the consumer was lost",
        )


async def test_a_read_that_waits_on_a_lost_consumer_has_it_made_again(
    bus: Bus, other: Bus, server: NatsServer | None
) -> None:
    """A ``caught_up`` read does not wait for the watchdog (here an hour away) or nats-py's missed heartbeats:
    a view that does not move while read has its consumer made again, and the read returns in its deadline."""
    async with _consumer_lost(bus, other, server, probe=3600.0) as (view, theirs):
        await theirs.put("c2", presence("c2", 2))
        await view.caught_up(timeout=3.0)
        assert view.get("c2") == presence("c2", 2)
        assert view.resumed == 1


async def test_a_read_has_a_lost_consumer_made_again_while_the_watchdog_backs_off(
    bus: Bus, other: Bus, server: NatsServer | None
) -> None:
    """The watchdog's tries to make a lost consumer again failed (JetStream electing leaders) and it now waits
    half a minute before the next: a read does not wait for that, it has the next try made at once."""
    async with _consumer_lost(bus, other, server, probe=3600.0) as (view, theirs):
        subscribe, tries = view._subscribe, 0

        async def refused(config: ConsumerConfig) -> JetStreamContext.PushSubscription:
            nonlocal tries
            tries += 1
            raise nats.errors.TimeoutError

        view._subscribe = refused  # type: ignore[method-assign]
        view._reconnected()  # as after a reconnect: the watchdog tries at once
        for n in range(1, 6):  # five refusals: its next try is 2**5 s away
            await wait_for(lambda n=n: tries >= n, timeout=5, what=f"try {n} to make the consumer again")  # type: ignore[misc]
            if n < 5:
                view._nudge.set()
        view._subscribe = subscribe  # type: ignore[method-assign]
        await theirs.put("c2", presence("c2", 2))
        await view.caught_up(timeout=3.0)
        assert view.get("c2") == presence("c2", 2)
        assert view.resumed == 1


async def test_after_a_nats_restart_the_view_catches_up_with_writes_made_while_it_was_away(
    bus: Bus, server: NatsServer | None
) -> None:
    if server is None:
        pytest.skip("the memory bus has no server to restart")
    mine = _watch(await bus.bucket(BUCKET, Presence, history=5))
    await mine.put("c1", presence("c1", 1))
    view = await mine.view(probe=1.0)
    try:
        server.stop()
        server.start()
        await server.wait_ready()
        # Written by another process at once, before this one's connection is back.
        writer = await NatsBus.connect(BusSettings(url=server.url), "contract-writer")
        try:
            theirs = await writer.bucket(BUCKET, Presence, history=5)
            await theirs.put("c2", presence("c2", 2))
            await theirs.delete("c1")
            await wait_for(
                lambda: view.get("c2") == presence("c2", 2) and view.get("c1") is None,
                timeout=30,
                what="the writes made while the view's connection was away",
            )
            # And it goes on following.
            await theirs.put("c3", presence("c3", 3))
            await appears(view, "c3", presence("c3", 3), "a write after the catch-up")
        finally:
            await writer.close()
    finally:
        await view.stop()
