"""A restarted registry answers its first hellos from the cluster records it keeps (issue 17).

Served before its records were loaded, a restarted registry read each early hello's record from a server busy
with 10,000 reconnects (1.7 s each), and its admission, sizing its appointments by those reads, told thousands
of agents to come back tens of seconds later. It loads them first now: a reconnect's hello reads nothing."""

from __future__ import annotations

import asyncio

import pytest

from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from schemas.messages import AGENT_PROTOCOL, AgentHello, AgentWelcome, ClusterRecord, decode
from services.bus import Delivery, Service, ServiceSettings
from services.bus.memory import MemoryBus
from services.registry import logic
from services.registry import service as registry


async def test_the_first_hello_after_a_start_reads_no_record(monkeypatch: pytest.MonkeyPatch) -> None:
    memory = MemoryBus()
    clusters = await memory.bucket(subjects.BUCKET_CLUSTERS, ClusterRecord, history=5)
    record = ClusterRecord(
        name="c1", state="connected", cluster_uid="uid-c1", credential_hash=logic.hash_secret("cred-c1")
    )
    await clusters.create("c1", record)
    reads: list[str] = []
    get = type(clusters).get

    async def counted(self: object, key: str) -> object:
        reads.append(key)
        return await get(self, key)  # type: ignore[arg-type]

    monkeypatch.setattr(type(clusters), "get", counted)
    view = type(clusters).view

    async def slow_view(self: object, *args: object) -> object:
        await asyncio.sleep(0.5)  # a busy server: the load takes a while
        return await view(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(type(clusters), "view", slow_view)
    hello = AgentHello(
        cluster="c1", credential="cred-c1", cluster_uid="uid-c1", protocol=AGENT_PROTOCOL, consumer_bound=True
    )
    answers: asyncio.Queue[Delivery] = asyncio.Queue()
    inbox = agent_inbox_prefix("c1")
    await memory.subscribe(f"{inbox}.>", answers.put)
    async with Service("registry", ServiceSettings(), lambda rt: registry.setup(rt, registry.Settings()), bus=memory):
        await memory.send(subjects.agent_call(subjects.Registry.AGENT_HELLO, "c1"), hello, reply=f"{inbox}.1")
        answer = await asyncio.wait_for(answers.get(), 5)
    assert decode(answer.data, AgentWelcome).cluster == "c1"
    assert reads == [], "answered from the records loaded before the endpoints were served"
