"""The registry's sweep finds an earlier version's agent consumers by listing each desired-state stream's
consumers a page at a time (``streams.stale_agent_consumers``), not by a look-up per cluster: which of the
listed consumers count, and the paging, against a JetStream that answers pages as nats-server does."""

from __future__ import annotations

from dataclasses import replace

import pytest
from nats.js.api import ConsumerConfig, ConsumerInfo
from nats.js.errors import NotFoundError

from schemas import subjects
from services.bus.streams import LIST_PAGE, agent_consumer_config, stale_agent_consumers


class ListingJetStream:
    """``consumers_info(stream, offset)``: at most ``LIST_PAGE`` of the stream's consumers from ``offset``;
    a stream never made answers "stream not found" (10059)."""

    def __init__(self, consumers: dict[str, list[ConsumerConfig]]) -> None:
        self.consumers = consumers
        self.requests: list[tuple[str, int]] = []

    async def consumers_info(self, stream: str, offset: int | None = None) -> list[ConsumerInfo]:
        self.requests.append((stream, offset or 0))
        if stream not in self.consumers:
            raise NotFoundError(code=404, err_code=10059, description="stream not found")
        page = self.consumers[stream][offset or 0 : (offset or 0) + LIST_PAGE]
        # As nats-server answers and nats-py reads it (durations in nanoseconds on the wire).
        return [
            ConsumerInfo.from_response(
                {"name": c.name, "stream_name": stream, "created": "2026-12-05T00:00:00Z", "config": c.as_dict()}
            )
            for c in page
        ]


def on_stream(stream: str, count: int) -> list[str]:
    """``count`` cluster names whose records live in ``stream``."""
    names, i = [], 0
    while len(names) < count:
        name = f"c{i}"
        if subjects.desired_stream(name) == stream:
            names.append(name)
        i += 1
    return names


def earlier(cluster: str) -> ConsumerConfig:
    return replace(agent_consumer_config(cluster), mem_storage=False)


async def stale(js: ListingJetStream) -> list[str]:
    return await stale_agent_consumers(js)  # type: ignore[arg-type]  # the part of JetStreamContext it uses


async def test_only_agents_consumers_of_another_config_are_stale() -> None:
    stream = subjects.DESIRED_STREAMS[3]
    old, current, elsewhere = on_stream(stream, 3)
    other_stream = subjects.DESIRED_STREAMS[4]
    misplaced = on_stream(other_stream, 1)[0]
    js = ListingJetStream(
        {
            stream: [
                earlier(old),
                agent_consumer_config(current),
                ConsumerConfig(name="operator-tap", durable_name="operator-tap", mem_storage=False),
                ConsumerConfig(name="agent-Not_A_Name", mem_storage=False),
                replace(earlier(misplaced), name=subjects.agent_consumer(misplaced)),  # not its cluster's stream
            ],
            other_stream: [agent_consumer_config(elsewhere)],
        }
    )
    assert await stale(js) == [old]


async def test_every_page_is_read_and_each_stream_once_when_it_fits_in_one() -> None:
    stream = subjects.DESIRED_STREAMS[0]
    clusters = on_stream(stream, LIST_PAGE + 44)
    js = ListingJetStream({s: [] for s in subjects.DESIRED_STREAMS} | {stream: [earlier(c) for c in clusters]})
    assert sorted(await stale(js)) == sorted(clusters)
    assert [r for r in js.requests if r[0] == stream] == [(stream, 0), (stream, LIST_PAGE)]
    assert len(js.requests) == len(subjects.DESIRED_STREAMS) + 1, "one request per stream, two for the long one"


async def test_a_stream_not_made_yet_has_no_consumers() -> None:
    assert await stale(ListingJetStream({})) == []


async def test_another_error_is_raised() -> None:
    class Refusing(ListingJetStream):
        async def consumers_info(self, stream: str, offset: int | None = None) -> list[ConsumerInfo]:
            raise NotFoundError(code=404, err_code=10014, description="consumer not found")

    with pytest.raises(NotFoundError):
        await stale(Refusing({}))
