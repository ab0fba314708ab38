"""Health against a nats-server that stands still: the fleet's silence while health cannot hear is not judged.

A server that stops reading for longer than the offline budget (a stall, its host frozen, the way to it cut
without a reset) holds every heartbeat, and health's sweep went on counting: every cluster shown offline, then
online again when the held heartbeats came in (two fsynced writes and two public events per cluster). Now a
sweep judges only once the server has answered a ping sent as it began: by then health has read what the
server sent it before, the held heartbeats with it, and those came late (``services.health.hearing``)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from datetime import UTC, datetime
from pathlib import Path

import nats

from schemas import subjects
from schemas.messages import ClusterEvent, ClusterHealth, Heartbeat, Presence, encode
from services.bus.nats_bus import NatsBus
from services.bus.settings import BusSettings
from services.health.service import HealthMonitor, Settings
from tests.harness import start_nats, wait_for

FREEZE = 5.0
"""Seconds the server stands still: more than the offline budget below plus a sweep."""


async def test_a_server_that_stood_still_is_not_the_fleet_going_silent(tmp_path: Path) -> None:
    server = start_nats(tmp_path)
    stopped = False
    tasks: list[asyncio.Task[None]] = []
    agents: list[nats.aio.client.Client] = []
    bus: NatsBus | None = None
    monitor: HealthMonitor | None = None
    try:
        await server.wait_ready()
        assert server.proc is not None
        bus = await NatsBus.connect(BusSettings(url=server.url), "health")
        await bus.declare_streams("platform")
        presence = await bus.bucket(subjects.BUCKET_PRESENCE, Presence)
        settings = Settings(offline_after=2.0, sweep_interval=0.2, heartbeat_interval=0.5)
        monitor = HealthMonitor(settings, bus, presence)
        await bus.subscribe(subjects.HEARTBEAT_ANY, monitor.on_heartbeat)
        monitor.transitions.start()
        started = datetime.now(UTC)
        tasks.append(asyncio.create_task(monitor.every(settings.sweep_interval, "sweep"), name="sweep"))

        async def agent(name: str) -> None:
            nc = await nats.connect(server.url)
            agents.append(nc)
            seq = 0
            while True:
                seq += 1
                hb = Heartbeat(cluster=name, session="s", seq=seq, sent_at=time.time(), health=ClusterHealth())
                await nc.publish(subjects.heartbeat(name), encode(hb))
                await asyncio.sleep(settings.heartbeat_interval)

        names = ["edge-1", "edge-2", "edge-3"]
        beating = {name: asyncio.create_task(agent(name), name=name) for name in names}
        tasks += beating.values()

        def online() -> set[str]:
            assert monitor is not None
            return {n for n, p in monitor.presence.items() if p.online}

        await wait_for(lambda: online() == set(names), timeout=10, what="the fleet online")
        os.kill(server.proc.pid, signal.SIGSTOP)
        stopped = True
        await asyncio.sleep(FREEZE)  # the fault itself: the server reads nothing for this long
        os.kill(server.proc.pid, signal.SIGCONT)
        stopped = False
        await bus.round_trip(timeout=10)

        # A cluster that really stops is still shown offline; the events read after it say whether any other
        # cluster went offline at any moment since the start (a flap ends online again, so only they show it).
        beating["edge-2"].cancel()
        await wait_for(lambda: "edge-2" not in online(), timeout=10, what="edge-2 shown offline")
        await monitor.transitions.settled()
        events = await bus.read_since(
            subjects.EVENTS_STREAM, subjects.public_event("cluster.offline"), started, ClusterEvent
        )
        assert [e.cluster for e in events] == ["edge-2"], "no cluster but the stopped one went offline"
    finally:
        if stopped:
            os.kill(server.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        if monitor is not None:
            await monitor.transitions.stop()
        for nc in agents:
            with contextlib.suppress(Exception):
                await nc.close()
        if bus is not None:
            await bus.close()
        server.stop()
