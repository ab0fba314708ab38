"""``read_since`` reads as many messages as its consumer had pending when made: a fetch that comes back empty
meanwhile (a slow or electing server) is asked again, not taken as the end (pure: a stand-in JetStream)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import ServiceUnavailableError

from schemas.errors import Unavailable
from schemas.messages import ClusterEvent, encode
from services.bus import reading


def _msg(i: int, left: int) -> Any:
    data = encode(ClusterEvent(cluster=f"c{i}", kind="connected", at=float(i)))
    return SimpleNamespace(data=data, metadata=SimpleNamespace(num_pending=left))


@dataclass
class StandIn:
    """A consumer with ``pending`` messages whose fetches answer as scripted (an exception or a batch size)."""

    pending: int
    script: list[Exception | int]
    deleted: list[str] = field(default_factory=list)
    sent: int = 0

    async def add_consumer(self, stream: str, config: Any) -> Any:
        return SimpleNamespace(num_pending=self.pending)

    async def pull_subscribe_bind(self, name: str, *, stream: str) -> Any:
        return self

    async def fetch(self, batch: int, timeout: float) -> list[Any]:
        step = self.script.pop(0) if self.script else NatsTimeout()
        if isinstance(step, Exception):
            raise step
        out = [_msg(self.sent + i, self.pending - self.sent - i - 1) for i in range(step)]
        self.sent += step
        return out

    async def unsubscribe(self) -> None:
        pass

    async def delete_consumer(self, stream: str, name: str) -> None:
        self.deleted.append(name)


async def _read(js: StandIn) -> list[ClusterEvent]:
    return await reading.read_since(js, "EVENTS", "tether.public.>", datetime.now(UTC), ClusterEvent)  # type: ignore[arg-type]


async def test_empty_and_refused_fetches_midway_do_not_cut_the_history_short() -> None:
    js = StandIn(pending=5, script=[2, NatsTimeout(), ServiceUnavailableError(), 3])
    assert [e.cluster for e in await _read(js)] == ["c0", "c1", "c2", "c3", "c4"]
    assert len(js.deleted) == 1


async def test_a_history_that_cannot_be_read_in_time_is_an_error_not_a_short_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(reading, "READ_FOR", 0.3)
    js = StandIn(pending=5, script=[2])
    with pytest.raises(Unavailable, match="read 2 of 5 messages"):
        await _read(js)
    assert len(js.deleted) == 1


async def test_nothing_pending_is_answered_without_a_fetch() -> None:
    js = StandIn(pending=0, script=[ServiceUnavailableError()])
    assert await _read(js) == []
    assert js.script and len(js.deleted) == 1
