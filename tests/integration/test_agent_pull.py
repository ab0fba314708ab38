"""The agent's pulls from its durable consumer (``agent.bus.pull``), on a real nats-server: a pull is answered
by a message or ends with the server's status at once (expired, consumer deleted, no consumer), and an
answer to a pull that was ended meanwhile is never lost nor taken for the next pull's."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from agent.bus.pull import Puller, PullRefused
from tests.harness import wait_for

STREAM, SUBJECT, DURABLE = "PULLS", "pulls.c1.x", "agent-c1"


@pytest.fixture
async def puller(nc: Client) -> AsyncIterator[Puller]:
    """A puller on a fresh durable consumer (explicit acks, one unacknowledged at a time, like an agent's)."""
    await consumer(nc)
    it = Puller(nc, STREAM, DURABLE)
    await it.open()
    yield it
    await it.close()


async def waiting(nc: Client, pulls: int) -> None:
    """Until the consumer holds ``pulls`` pull requests."""

    async def held() -> bool:
        info = await nc.jetstream().consumer_info(STREAM, DURABLE)
        return bool(info.num_waiting == pulls)

    await wait_for(held, timeout=5, what=f"{pulls} pull(s) waiting at the server")


async def consumer(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(name=STREAM, subjects=["pulls.>"])
    await js.add_consumer(
        STREAM,
        ConsumerConfig(
            durable_name=DURABLE, filter_subject="pulls.c1.>", ack_policy=AckPolicy.EXPLICIT, max_ack_pending=1
        ),
    )


async def test_a_pull_is_answered_by_a_message_then_expires_quietly(nc: Client, puller: Puller) -> None:
    await nc.jetstream().publish(SUBJECT, b"one")
    msg = await puller.next(5.0)
    assert msg is not None and msg.data == b"one" and msg.metadata.num_delivered == 1
    await msg.ack_sync()
    started = time.monotonic()
    assert await puller.next(0.5) is None  # 408: nothing within the pull's expiry
    assert 0.4 < time.monotonic() - started < 2.0


async def test_a_deleted_consumer_ends_the_pull_at_once(nc: Client, puller: Puller) -> None:
    pulling = asyncio.ensure_future(puller.next(30.0))
    await waiting(nc, 1)
    await nc.jetstream().delete_consumer(STREAM, DURABLE)
    with pytest.raises(PullRefused, match="409"):
        await asyncio.wait_for(pulling, 5.0)
    with pytest.raises(PullRefused, match="503"):  # no consumer at all: nobody answers
        await asyncio.wait_for(puller.next(30.0), 5.0)


async def test_a_message_for_an_ended_pull_is_kept_for_the_next(nc: Client, puller: Puller) -> None:
    first = asyncio.ensure_future(puller.next(5.0))
    await waiting(nc, 1)
    puller.end()  # as after a reconnect: the pull may be gone (here it still waits at the server)
    assert await first is None
    await nc.jetstream().publish(SUBJECT, b"for the ended pull")
    await waiting(nc, 0)  # delivered, to the first pull's reply subject (kept, or on its way)
    msg = await asyncio.wait_for(puller.next(5.0), 1.0)  # at once, not after the next pull's expiry
    assert msg is not None and msg.data == b"for the ended pull"
    await msg.ack_sync()


async def test_the_expiry_of_an_ended_pull_does_not_end_the_next(nc: Client, puller: Puller) -> None:
    first = asyncio.ensure_future(puller.next(0.5))
    await waiting(nc, 1)
    puller.end()
    assert await first is None
    second = asyncio.ensure_future(puller.next(5.0))
    await waiting(nc, 2)
    await waiting(nc, 1)  # the first pull expired: its 408 came, on its own reply subject
    await asyncio.sleep(0.2)  # (time for that 408 to reach the client, which must not end the second pull)
    assert not second.done()
    await nc.jetstream().publish(SUBJECT, b"two")
    msg = await asyncio.wait_for(second, 5.0)
    assert msg is not None and msg.data == b"two"
    await msg.ack_sync()


async def acked(nc: Client, stream_seq: int) -> bool:
    info = await nc.jetstream().consumer_info(STREAM, DURABLE)
    return bool(info.ack_floor.stream_seq >= stream_seq)


async def test_a_pull_carries_the_ack_of_the_message_before_it_in_one_message(nc: Client, puller: Puller) -> None:
    js = nc.jetstream()
    await js.publish(SUBJECT, b"one")
    await js.publish(SUBJECT, b"two")
    one = await puller.next(5.0)
    assert one is not None and one.data == b"one"
    sent = nc.stats["out_msgs"]
    two = await puller.next(5.0, acking=one)  # one at a time: "two" comes only once "one" is acknowledged
    assert two is not None and two.data == b"two"
    assert nc.stats["out_msgs"] - sent == 1, "the ack and the pull went as one message"
    assert puller.answered and await acked(nc, one.metadata.sequence.stream)
    assert await puller.next(0.3, acking=two) is None  # expired: its status answers, so the ack is confirmed
    assert puller.answered and await acked(nc, two.metadata.sequence.stream)


async def test_an_unanswered_pull_leaves_its_ack_unconfirmed_and_sending_it_again_is_harmless(
    nc: Client, puller: Puller
) -> None:
    js = nc.jetstream()
    await js.publish(SUBJECT, b"one")
    one = await puller.next(5.0)
    assert one is not None
    pulling = asyncio.ensure_future(puller.next(5.0, acking=one))
    await waiting(nc, 1)
    puller.end()  # as after a reconnect: nothing says whether the server had the ack
    assert await pulling is None and not puller.answered
    await js.publish(SUBJECT, b"two")
    two = await asyncio.wait_for(puller.next(5.0, acking=one), 5.0)  # kept from the ended pull, or pulled
    assert two is not None and two.data == b"two"
    # "one" acknowledged again: nothing changes, and the pull is still served (it waits: "two" is pending)
    again = asyncio.ensure_future(puller.next(0.5, acking=one))
    await waiting(nc, 1)
    assert await again is None and puller.answered
    assert await puller.next(0.3, acking=two) is None and puller.answered
    assert await acked(nc, two.metadata.sequence.stream)


async def test_an_ack_refused_for_want_of_a_consumer_is_not_taken_as_confirmed(nc: Client, puller: Puller) -> None:
    """A 503 (nobody serves the consumer: JetStream starting, a leader election, or the consumer gone) means
    nobody processed the ack the pull carried: the caller sends it again with its next pull."""
    await nc.jetstream().publish(SUBJECT, b"one")
    one = await puller.next(5.0)
    assert one is not None
    await nc.jetstream().delete_consumer(STREAM, DURABLE)
    with pytest.raises(PullRefused, match="503"):
        await asyncio.wait_for(puller.next(5.0, acking=one), 5.0)
    assert not puller.answered
