"""A bucket kept in the process (``Records.view``) on a 3-node JetStream cluster: after the stream's leader steps
down, and after the node that held the view's consumer is killed (-9), the writes made meanwhile by another
process reach the view within a deadline; it is never left silently stale."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from schemas.messages import Presence
from services.bus import BusSettings, Records, View
from services.bus.kv import Bucket
from services.bus.nats_bus import NatsBus
from services.platform.natsd import NatsServer
from tests.harness import meta_leader, start_nats_cluster, wait_for, wait_jetstream_cluster

pytestmark = [pytest.mark.chaos, pytest.mark.timeout(180)]

BUCKET = "tether-failover-view"
CATCH_UP = 30.0
"""Seconds the view may take to catch up after a failover (elections, the consumer made again)."""
ELECTION_READ = 20.0
"""A read's deadline here: past nats-server's longest election timeout (9 s), with room for a loaded machine."""


def presence(cluster: str, n: int) -> Presence:
    return Presence(cluster=cluster, online=True, last_seen=float(n))


@contextlib.asynccontextmanager
async def _cluster(tmp_path: Path) -> AsyncIterator[tuple[list[NatsServer], BusSettings, list[NatsBus]]]:
    """Three nodes, the settings to reach them all, and a list of the buses to close when done."""
    auth = tmp_path / "auth"
    nodes = start_nats_cluster(tmp_path, auth)
    buses: list[NatsBus] = []
    try:
        await wait_jetstream_cluster(nodes)
        yield (
            nodes,
            BusSettings(url=",".join(n.url for n in nodes), creds_file=str(auth / "platform.creds"), replicas=3),
            buses,
        )
    finally:
        for bus in buses:
            await bus.close()
        for server in nodes:
            server.stop()


async def test_a_view_catches_up_after_a_leader_change_and_the_loss_of_its_consumer_node(tmp_path: Path) -> None:
    async with _cluster(tmp_path) as (nodes, settings, buses):
        reader, writer = await NatsBus.connect(settings, "view-reader"), await NatsBus.connect(settings, "view-writer")
        buses += [reader, writer]
        mine = await reader.bucket(BUCKET, Presence, history=5)
        theirs = await writer.bucket(BUCKET, Presence, history=5)
        assert isinstance(mine, Bucket)
        # A bucket just made on three nodes may not have elected its stream's leader yet (its first write was once
        # answered "no responders"): the first write waits for it like the later ones wait for theirs.
        await _stored(theirs, "c0", 0, "the first write to the new bucket")
        view = await mine.view(probe=1.0)
        try:
            # The stream's leader steps down: the writes go on on its new leader.
            js = mine.kv._js
            await js._nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{mine.kv._stream}", b"", timeout=5)
            await _write_and_see(theirs, view, "c1", 1, "a write after the stream's leader stepped down")

            # The node that holds the view's (one-replica) consumer dies.
            info = await js.consumer_info(mine.kv._stream, view._sub._consumer)  # type: ignore[attr-defined]
            holder = info.cluster.leader if info.cluster else None
            victim = next(n for n in nodes if n.config.server_name == holder)
            victim.kill()
            await wait_for(
                lambda: asyncio.to_thread(_others_agree, [n for n in nodes if n is not victim]),
                timeout=CATCH_UP,
                what="a stream leader among the nodes left",
            )
            await _write_and_see(theirs, view, "c2", 2, "a write after the consumer's node died")
            await theirs.delete("c0")
            await wait_for(lambda: view.get("c0") is None, timeout=CATCH_UP, what="a deletion after the failover")
            assert set(view.items()) == {"c1", "c2"}
        finally:
            await view.stop()


async def test_a_read_waiting_for_the_view_answers_once_the_stream_has_a_new_leader(tmp_path: Path) -> None:
    """``caught_up`` asks the stream for its newest revision (a direct get). After the node holding the stream's
    leader dies, nothing answers those until the two nodes left elect a new leader (4-9 s, nats-server's
    election timeout): the read asks again until it does, within its deadline, and then holds the write made just
    before the loss (it once failed at the first "no responders": a list's 503 after a failover, in CI)."""
    async with _cluster(tmp_path) as (nodes, settings, buses):
        writer = await NatsBus.connect(settings, "view-writer")
        buses.append(writer)
        theirs = await writer.bucket(BUCKET, Presence, history=5)
        assert isinstance(theirs, Bucket)
        await _stored(theirs, "c0", 0, "the first write to the new bucket")
        cluster = (await theirs.kv._js.stream_info(theirs.kv._stream)).cluster
        assert cluster is not None and cluster.leader
        victim = next(n for n in nodes if n.config.server_name == cluster.leader)
        # The reader is on the nodes that stay: what is waited for is the stream's election, not a reconnect.
        others = ",".join(n.url for n in nodes if n is not victim)
        reader = await NatsBus.connect(BusSettings(url=others, creds_file=settings.creds_file, replicas=3), "reader")
        buses.append(reader)
        mine = await reader.bucket(BUCKET, Presence, history=5)
        view = await mine.view()
        try:
            await theirs.put("c1", presence("c1", 1))
            victim.kill()
            await view.caught_up(timeout=ELECTION_READ)
            assert view.get("c1") == presence("c1", 1)
        finally:
            await view.stop()


async def _stored(records: Records[Presence], key: str, n: int, what: str) -> None:
    async def written() -> bool:
        try:
            await records.put(key, presence(key, n))
        except Exception:
            return False  # an election still under way: try again
        return True

    await wait_for(written, timeout=CATCH_UP, interval=0.5, what=f"{what} (stored)")


async def _write_and_see(records: Records[Presence], view: View[Presence], key: str, n: int, what: str) -> None:
    await _stored(records, key, n, what)
    await wait_for(lambda: view.get(key) == presence(key, n), timeout=CATCH_UP, what=what)


def _others_agree(nodes: list[NatsServer]) -> bool:
    return meta_leader(nodes) is not None
