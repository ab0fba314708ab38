"""Reading one cluster's keys of a bucket (``Bucket.items_under``) on a real nats-server: only those keys' last
entries, by one batched direct get where the bucket allows direct gets (no consumer, no JetStream API request),
and through a filtered consumer beyond the batch's limit or without direct gets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import KeyValueConfig

from schemas.errors import InvalidInput
from schemas.messages import Presence
from services.bus.kv import MULTI_LAST_MAX, Bucket
from services.bus.streams import ensure_bucket


@pytest.fixture
async def api_requests(nc: Client) -> AsyncIterator[list[str]]:
    """Subjects of the JetStream API requests made meanwhile (a consumer's creation is one; a direct get
    is not: it bypasses the API)."""
    seen: list[str] = []

    async def on(msg: Msg) -> None:
        seen.append(msg.subject)

    sub = await nc.subscribe("$JS.API.CONSUMER.>", cb=on)
    yield seen
    await sub.unsubscribe()


async def settled(nc: Client) -> None:
    await nc.flush()
    await asyncio.sleep(0)  # the subscription's callback has run for everything flushed


def at(cluster: str, i: int) -> tuple[str, Presence]:
    return f"{cluster}.tenant.p.t{i}", Presence(cluster=cluster, last_seen=float(i))


async def fill(bucket: Bucket[Presence], cluster: str, n: int) -> dict[str, Presence]:
    wanted = dict(at(cluster, i) for i in range(n))
    await asyncio.gather(*(bucket.put(k, v) for k, v in wanted.items()))
    return wanted


async def test_one_clusters_keys_by_one_batched_direct_get(nc: Client, api_requests: list[str]) -> None:
    bucket = await ensure_bucket(nc.jetstream(), "t-under", Presence, replicas=1, history=5)
    assert bucket.kv._direct
    c1 = await fill(bucket, "c1", 4)
    await fill(bucket, "c10", 3)  # a cluster whose name starts like c1's
    await fill(bucket, "c2", 3)
    newer = Presence(cluster="c1", last_seen=99.0)
    await bucket.put("c1.tenant.p.t0", newer)  # the last entry of a key is read, not its first
    await bucket.delete("c1.tenant.p.t1")  # a deletion marker is no record
    await bucket.purge("c1.tenant.p.t2")
    await settled(nc)
    api_requests.clear()

    got = await bucket.items_under("c1.")

    assert got == {"c1.tenant.p.t0": newer, "c1.tenant.p.t3": c1["c1.tenant.p.t3"]}
    assert await bucket.items_under("c3.") == {}
    await settled(nc)
    assert api_requests == []  # no consumer: one direct get each
    for bad in ("c1", "c1.tenant.", "*.", ">.", "c 1."):
        with pytest.raises(InvalidInput):
            await bucket.items_under(bad)


async def test_more_keys_than_one_batch_are_read_through_a_filtered_consumer(
    nc: Client, api_requests: list[str]
) -> None:
    bucket = await ensure_bucket(nc.jetstream(), "t-under-many", Presence, replicas=1)
    many = await fill(bucket, "c1", MULTI_LAST_MAX + 50)
    await fill(bucket, "c2", 5)
    await settled(nc)
    api_requests.clear()

    assert await bucket.items_under("c1.") == many
    await settled(nc)
    assert any(".CREATE." in s for s in api_requests), api_requests


async def test_without_direct_gets_a_filtered_consumer_reads_the_keys(nc: Client) -> None:
    js = nc.jetstream()
    # A replicated bucket keeps its reads with the leader: no direct gets (streams.ensure_bucket).
    kv = await js.create_key_value(KeyValueConfig(bucket="t-under-leader", history=5, direct=False))
    bucket = Bucket(kv, Presence)
    c1 = await fill(bucket, "c1", 3)
    await fill(bucket, "c11", 2)
    await bucket.delete("c1.tenant.p.t0")
    del c1["c1.tenant.p.t0"]

    assert await bucket.items_under("c1.") == c1
    assert await bucket.items_under("c4.") == {}


def counting(bucket: Bucket[Presence]) -> Callable[[], int]:
    calls = 0
    whole = bucket.items

    async def items(timeout: float = 10.0) -> dict[str, Presence]:
        nonlocal calls
        calls += 1
        return await whole(timeout)

    bucket.items = items  # type: ignore[method-assign]
    return lambda: calls


async def test_the_whole_bucket_is_not_read(nc: Client) -> None:
    bucket = await ensure_bucket(nc.jetstream(), "t-under-whole", Presence, replicas=1)
    await fill(bucket, "c1", 2)
    await fill(bucket, "c2", 2)
    calls = counting(bucket)
    assert len(await bucket.items_under("c2.")) == 2
    assert calls() == 0
