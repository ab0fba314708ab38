"""The registry's ``listening`` notices at its start: every connected cluster's agent told once, a window at a
time (never more told and unheard than the window), silent agents given up on after a wait, and agents already
heard from not told at all."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from schemas import subjects
from schemas.messages import ControlNotice, Message, decode
from services.bus import Delivery
from services.bus.memory import MemoryBus
from services.registry.wake import FleetWake, Window


class Fleet:
    """Agents on a MemoryBus: each that is ``live`` says hello (``wake.heard``) when told; counts what it got."""

    def __init__(self, bus: MemoryBus, live: set[str]) -> None:
        self.bus = bus
        self.live = live
        self.told: list[str] = []
        self.unheard_at_most = 0
        self.wake: FleetWake | None = None
        self._unheard: set[str] = set()
        self._count = 0
        self._reached = asyncio.Event()

    async def told_at_least(self, count: int) -> None:
        """Until ``count`` notices were delivered (the last window's are on their way when ``run`` returns)."""
        self._count = count
        if len(self.told) < count:
            self._reached.clear()
            await self._reached.wait()

    async def listen(self) -> None:
        await self.bus.subscribe(subjects.control("c0").rsplit(".", 1)[0] + ".*", self._notice)

    async def _notice(self, d: Delivery) -> None:
        assert decode(d.data, ControlNotice).kind == "listening"
        cluster = d.subject.rsplit(".", 1)[-1]
        self.told.append(cluster)
        if len(self.told) >= self._count:
            self._reached.set()
        self._unheard.add(cluster)
        self.unheard_at_most = max(self.unheard_at_most, len(self._unheard))
        if cluster in self.live:
            asyncio.get_running_loop().call_soon(self._hello, cluster)

    def _hello(self, cluster: str) -> None:
        self._unheard.discard(cluster)
        assert self.wake is not None
        self.wake.heard(cluster)


async def fleet_of(names: list[str], *, live: bool, window: int, answer_wait: float) -> tuple[Fleet, FleetWake]:
    bus = MemoryBus()
    fleet = Fleet(bus, live=set(names) if live else set())
    await fleet.listen()
    fleet.wake = wake = FleetWake(bus, lambda: names, window=window, answer_wait=answer_wait)
    return fleet, wake


async def test_every_connected_agent_is_told_once_and_never_more_than_a_window_unheard() -> None:
    names = [f"c{i:04d}" for i in range(600)]
    fleet, wake = await fleet_of(names, live=True, window=64, answer_wait=5.0)
    async with asyncio.timeout(10):
        await wake.run()
        await fleet.told_at_least(len(names))
    assert sorted(fleet.told) == names
    assert fleet.unheard_at_most <= 64


async def test_agents_that_never_answer_free_their_place_after_the_wait() -> None:
    names = [f"c{i}" for i in range(10)]
    fleet, wake = await fleet_of(names, live=False, window=4, answer_wait=0.05)
    loop = asyncio.get_running_loop()
    began = loop.time()
    async with asyncio.timeout(10):
        await wake.run()
        await fleet.told_at_least(len(names))
    assert sorted(fleet.told) == sorted(names)
    assert loop.time() - began >= 2 * 0.05  # windows of 4, 4 and 2: the second and third each waited one out


async def test_agents_heard_from_before_or_while_the_notices_go_out_are_not_told() -> None:
    names = [f"c{i}" for i in range(8)]
    fleet, wake = await fleet_of(names, live=True, window=2, answer_wait=5.0)
    wake.heard("c0")  # its hello came before the notices began
    original = fleet._hello

    def hello_and_another(cluster: str) -> None:
        original(cluster)
        if cluster == "c1":
            wake.heard("c7")  # reconnected meanwhile and said hello by itself

    fleet._hello = hello_and_another  # type: ignore[method-assign]
    async with asyncio.timeout(10):
        await wake.run()
        await fleet.told_at_least(6)
    assert sorted(fleet.told) == ["c1", "c2", "c3", "c4", "c5", "c6"]
    wake.heard("c1")  # after the run: nothing kept, nothing raised


def test_the_window_frees_a_place_per_hello_and_per_expiry() -> None:
    window = Window(["a", "b", "c"], size=2, answer_wait=1.0)
    assert window.next_batch(now=0.0) == ["a", "b"]
    assert window.next_batch(now=0.1) == []
    assert window.next_expiry(now=0.5) == 0.5
    assert window.hear("a") is True
    assert window.hear("a") is False  # heard twice: frees nothing more
    assert window.next_batch(now=0.6) == ["c"]
    window.expire(now=1.0)  # b told at 0.0: given up on
    assert list(window.told) == ["c"]
    assert window.sent == 3


class Broken(MemoryBus):
    async def send_many(self, messages: Sequence[tuple[str, Message]]) -> None:
        raise ConnectionError("nats: connection closed")


async def test_a_bus_in_trouble_ends_the_notices_not_the_registry() -> None:
    wake = FleetWake(Broken(), lambda: ["c1", "c2"], window=1, answer_wait=5.0)
    async with asyncio.timeout(5):
        await wake.run()  # returns: a task that raised would end the registry
    wake.heard("c1")  # after the run: nothing kept, nothing raised
