"""The command path against a real nats-server (promises 2, 3, 4 and 8).

Commands published while the agent is away wait in the CMD stream and are
applied in order, exactly once, when it comes; each produces one result in
the EVT stream; duplicates are dropped by the stream or found already applied
by the agent's revision check; a ``kill -9`` in the middle of an apply loses
nothing and applies nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import Header, RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from agent import capabilities, running
from agent.capabilities import Context
from agent.drivers.sim import APPLY_DELAY_ENV, FAIL_ENV, UID_ENV, read_state
from agent.running import Agent
from agent.settings import AgentSettings
from schemas import subjects
from schemas.errors import Unavailable
from schemas.messages import (
    ClusterConnectInfo,
    ClusterCreate,
    Command,
    CommandResult,
    DesiredState,
    Inventory,
    M,
    WorkloadSpec,
    decode,
    encode,
)
from services.bus.endpoints import call
from services.bus.settings import BusSettings, ServiceSettings
from services.bus.streams import cmd_streams, ensure_cmd_streams, platform_streams
from services.platform.natsd import NatsServer
from services.registry.service import Settings as RegistrySettings
from services.registry.service import run as run_registry
from tests.harness import ROOT, wait_for


@pytest.fixture(autouse=True)
def _no_env_knobs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (UID_ENV, APPLY_DELAY_ENV, FAIL_ENV):
        monkeypatch.delenv(name, raising=False)


@dataclass
class Platform:
    url: str
    nc: Client
    js: JetStreamContext

    async def connect_cluster(self, name: str) -> str:
        info = await call(self.nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=name), ClusterConnectInfo)
        return info.token

    async def send(self, command: Command, msg_id: str | None = None) -> bool:
        """Publish a command as lifecycle does; True when the stream took it (not a duplicate)."""
        ack = await self.js.publish(
            subjects.cmd(command.spec.cluster, subjects.VERB_APPLY),
            encode(command),
            headers={Header.MSG_ID: msg_id or command.op_id},
        )
        return not ack.duplicate

    async def evt(self, cluster: str, kind: str, type_: type[M]) -> list[M]:
        """Everything in the EVT stream on ``tether.evt.<cluster>.<kind>``, oldest first."""
        sub = await self.js.pull_subscribe(subjects.evt(cluster, kind), stream=subjects.EVT_STREAM)
        out: list[M] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(100, timeout=0.5)
                except TimeoutError:
                    return out
                out.extend(decode(m.data, type_) for m in msgs)
        finally:
            await sub.unsubscribe()

    async def results(self, cluster: str) -> list[CommandResult]:
        return await self.evt(cluster, subjects.EVT_RESULT, CommandResult)

    async def cmd_pending(self) -> int:
        return int((await self.js.stream_info(subjects.cmd_stream("c1"))).state.messages)


@pytest.fixture
async def platform(nats_server: NatsServer) -> AsyncIterator[Platform]:
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for config in cmd_streams(1):
        await js.add_stream(config)
    for config in platform_streams(1):
        await js.add_stream(config)
    registry = asyncio.create_task(
        run_registry(RegistrySettings(common=ServiceSettings(bus=BusSettings(url=nats_server.url)))),
        name="registry",
    )
    try:
        await wait_for(lambda: _registry_up(nc), what="the registry", timeout=20)
        yield Platform(url=nats_server.url, nc=nc, js=js)
    finally:
        registry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registry
        await nc.close()


async def _registry_up(nc: Client) -> bool:
    try:
        await nc.request("$SRV.PING.tether-registry", b"", timeout=0.5)
    except Exception:
        return False
    return True


def command(
    n: int,
    name: str,
    generation: int,
    state: DesiredState = "running",
    version: str = "v1.35.0",
    cluster: str = "c1",
) -> Command:
    return Command(
        op_id=f"op-{n}",
        generation=generation,
        issued_at=float(n),
        operation="test",
        spec=WorkloadSpec(kind="tenant", project="p1", name=name, cluster=cluster, state=state, version=version),
    )


PLAN = [
    command(1, "t1", 1),
    command(2, "t2", 1),
    command(3, "t1", 2, "sleeping"),
    command(4, "t1", 3, "running", "v1.36.0"),
    command(5, "t2", 2, "deleted"),
]


def applied_log(state_dir: Path) -> list[tuple[str, str, int, str]]:
    return [(e["op_id"], e["name"], e["generation"], e["state"]) for e in read_state(state_dir)["log"]]


EXPECTED = [(c.op_id, c.spec.name, c.generation, c.spec.state) for c in PLAN]


async def test_commands_wait_for_the_agent_and_apply_once_in_order(platform: Platform, tmp_path: Path) -> None:
    token = await platform.connect_cluster("c1")
    # The outage: every command is issued before the agent ever ran.
    for c in PLAN:
        assert await platform.send(c)
    assert await platform.cmd_pending() == 5

    state_dir = tmp_path / "agent"
    settings = AgentSettings(
        server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5, inventory_interval=1.0
    )
    async with Agent(settings) as agent:
        await wait_for(lambda: len(read_state(state_dir)["log"]) >= 5, what="5 applies")
        results = await wait_for(lambda: _at_least(platform.results("c1"), 5), what="5 results in the EVT stream")
        assert applied_log(state_dir) == EXPECTED
        assert [(r.op_id, r.generation, r.ok, r.applied) for r in results] == [
            (c.op_id, c.generation, True, True) for c in PLAN
        ]
        assert results[3].state == "running" and results[3].version == "v1.36.0"
        assert results[4].state == "deleted"
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the work queue to drain")
        assert agent.commands_applied == 5

        # The same command again with the same id: the stream drops it.
        assert not await platform.send(PLAN[3])
        # The same command with a new message id: the stream takes it; the agent finds it
        # applied, and its result (same result id) is dropped by the EVT stream.
        assert await platform.send(PLAN[3], msg_id="op-4-again")
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the resent command to be acked")
        # The same generation under a new operation (a resync): reported, not applied.
        resync = Command(op_id="resync-1", generation=3, issued_at=9.0, operation="resync", spec=PLAN[3].spec)
        assert await platform.send(resync)
        results = await wait_for(lambda: _at_least(platform.results("c1"), 6), what="the resync's result")
        assert len(results) == 6
        last = results[-1]
        assert (last.op_id, last.ok, last.applied, last.state, last.version) == (
            "resync-1",
            True,
            False,
            "running",
            "v1.36.0",
        )
        assert applied_log(state_dir) == EXPECTED
        assert read_state(state_dir)["counters"]["skipped"] == 2
        assert agent.commands_applied == 5

        # Inventory: one at connect, then periodic ones that show what is there.
        async def periodic() -> Inventory | None:
            invs = await platform.evt("c1", subjects.EVT_INVENTORY, Inventory)
            return next((i for i in reversed(invs) if i.reason == "periodic"), None)

        inv = await wait_for(periodic, what="a periodic inventory")
        assert [(i.name, i.generation, i.state, i.version) for i in inv.items] == [("t1", 3, "running", "v1.36.0")]
        invs = await platform.evt("c1", subjects.EVT_INVENTORY, Inventory)
        assert invs[0].reason == "connect" and invs[0].cluster == "c1"


async def test_failures_are_reported_and_do_not_block_the_queue(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_ENV, "broken")
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings):
        assert await platform.send(command(1, "broken", 1))
        # Malformed: not reported (nothing to attribute it to), terminated, and the queue moves on.
        await platform.js.publish(subjects.cmd("c1", subjects.VERB_APPLY), b"{garbage", headers={Header.MSG_ID: "g"})
        assert await platform.send(command(2, "fine", 1))
        results = await wait_for(lambda: _at_least(platform.results("c1"), 2), what="two results")
        assert [(r.op_id, r.ok, r.reason) for r in results] == [("op-1", False, "SimulatedFailure"), ("op-2", True, "")]
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the work queue to drain")
        assert applied_log(state_dir) == [("op-2", "fine", 1, "running")]


async def test_the_agent_waits_for_the_cmd_stream(nats_server: NatsServer, tmp_path: Path) -> None:
    """Started before lifecycle created the CMD stream, the agent waits, then serves commands."""
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    for config in platform_streams(1):
        await js.add_stream(config)
    registry = asyncio.create_task(
        run_registry(RegistrySettings(common=ServiceSettings(bus=BusSettings(url=nats_server.url))))
    )
    try:
        await wait_for(lambda: _registry_up(nc), what="the registry", timeout=20)
        p = Platform(url=nats_server.url, nc=nc, js=js)
        token = await p.connect_cluster("c1")
        state_dir = tmp_path / "agent"
        settings = AgentSettings(server=p.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
        async with Agent(settings):
            await asyncio.sleep(1.5)  # fetching finds no stream; the agent keeps running
            for config in cmd_streams(1):
                await js.add_stream(config)
            assert await p.send(command(1, "t1", 1))
            await wait_for(lambda: len(read_state(state_dir)["log"]) == 1, what="the apply", timeout=40)
    finally:
        registry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registry
        await nc.close()


@pytest.mark.chaos
async def test_kill_9_mid_apply_loses_nothing_and_applies_nothing_twice(platform: Platform, tmp_path: Path) -> None:
    token = await platform.connect_cluster("c1")
    for c in PLAN:
        assert await platform.send(c)
    state_dir = tmp_path / "agent"
    log_path = tmp_path / "agent.log"
    env = {**os.environ, APPLY_DELAY_ENV: "0.7", "TETHER_LOG_LEVEL": "INFO"}
    argv = [sys.executable, "-m", "agent", "run", "--server", platform.url, "--state-dir", str(state_dir)]

    def start(extra: list[str]) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                argv + extra, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )

    proc = start(["--token", token])
    try:
        await wait_for(lambda: len(read_state(state_dir)["log"]) >= 2, what="two applies", timeout=30)
        await asyncio.sleep(0.3)  # now inside the third apply's delay
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc = start([])
        # The command that was in flight comes back after the consumer's ack wait (30 s).
        await wait_for(lambda: len(read_state(state_dir)["log"]) >= 5, what="all applies", timeout=60)
        results = await wait_for(lambda: _at_least(platform.results("c1"), 5), what="5 results", timeout=30)
        assert applied_log(state_dir) == EXPECTED
        assert sorted((r.op_id, r.generation) for r in results) == sorted((c.op_id, c.generation) for c in PLAN)
        assert len(results) == 5
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the work queue to drain")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log_path.exists():
            print(log_path.read_text(errors="replace")[-5000:])


async def _at_least(results: Awaitable[list[CommandResult]], n: int) -> list[CommandResult] | None:
    items = await results
    return items if len(items) >= n else None


async def _eq(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_orderly_stop_finishes_the_command_in_flight(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(APPLY_DELAY_ENV, "1.0")
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    agent = Agent(settings)
    await agent.start()
    try:
        assert await platform.send(command(1, "t1", 1))
        await wait_for(lambda: agent.commands.in_flight is not None, what="the apply to begin")
    finally:
        await agent.stop()  # mid-apply: the apply, its result and the ack complete first
    assert applied_log(state_dir) == [("op-1", "t1", 1, "running")]
    assert [r.op_id for r in await platform.results("c1")] == ["op-1"]
    assert await platform.cmd_pending() == 0


async def test_commands_flow_again_after_the_server_restarts(
    platform: Platform, nats_server: NatsServer, tmp_path: Path
) -> None:
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings) as agent:
        assert await platform.send(command(1, "t1", 1))
        await wait_for(lambda: len(read_state(state_dir)["log"]) == 1, what="the first apply")
        nats_server.stop()
        await asyncio.sleep(0.5)
        nats_server.start()
        await nats_server.wait_ready()
        await wait_for(lambda: agent.connection.is_connected and platform.nc.is_connected, what="reconnects")
        # Published while the agent may still be re-binding: it waits in the stream.
        second = command(2, "t1", 2, "sleeping")

        async def published() -> bool:
            await platform.send(second)  # a retry after a lost ack is a duplicate: fine
            return True

        await wait_for(published, what="the publish", timeout=20)
        await wait_for(lambda: len(read_state(state_dir)["log"]) == 2, what="the second apply", timeout=30)
        results = await wait_for(lambda: _at_least(platform.results("c1"), 2), what="both results")
        assert [r.op_id for r in results] == ["op-1", "op-2"]


async def test_an_empty_command_stream_of_an_earlier_version_is_retired_and_a_full_one_kept(
    nats_server: NatsServer,
) -> None:
    """Earlier versions kept every command in one stream ``CMD`` (subjects overlapping the shards'). Empty,
    it is deleted; holding commands, it is kept and the start fails saying why."""
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    legacy = StreamConfig(name="CMD", subjects=["tether.cmd.>"], retention=RetentionPolicy.WORK_QUEUE)
    try:
        await js.add_stream(legacy)
        await js.publish("tether.cmd.c1.apply", b"{}")
        with pytest.raises(Unavailable, match="stream CMD of an earlier version still holds 1 commands"):
            await ensure_cmd_streams(js, 1)
        assert (await js.stream_info("CMD")).state.messages == 1
        await js.purge_stream("CMD")
        await ensure_cmd_streams(js, 1)
        with pytest.raises(NotFoundError):
            await js.stream_info("CMD")
        names = {(await js.stream_info(name)).config.name for name in subjects.CMD_STREAMS}
        assert names == set(subjects.CMD_STREAMS)
        ack = await js.publish(subjects.cmd("c1", subjects.VERB_APPLY), b"{}")
        assert ack.stream == subjects.cmd_stream("c1")
    finally:
        await nc.close()


class Probe:
    """A capability that only records what the agent does with it."""

    def __init__(self, ctx: Context) -> None:
        self.cluster = ctx.cluster
        self.serving = asyncio.Event()
        self.resets = 0
        self.closed = 0

    async def serve(self) -> None:
        self.serving.set()
        await asyncio.Event().wait()

    def reset(self) -> None:
        self.resets += 1

    async def close(self) -> None:
        self.closed += 1


async def test_a_capability_is_one_entry_in_the_capabilities_table(
    platform: Platform, nats_server: NatsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seam of agent/capabilities.py: one more entry is served as its own task, reset after a reconnect and
    closed at the stop, beside the Kubernetes gateway."""
    probes: list[Probe] = []

    def make(ctx: Context) -> Probe:
        probes.append(Probe(ctx))
        return probes[-1]

    monkeypatch.setattr(running, "CAPABILITIES", (*capabilities.CAPABILITIES, ("probe", make)))
    token = await platform.connect_cluster("c1")
    settings = AgentSettings(server=platform.url, token=token, state_dir=tmp_path / "agent", heartbeat_interval=0.5)
    agent = Agent(settings)
    await agent.start()
    try:
        assert list(agent.capabilities) == ["gateway", "probe"]
        (probe,) = probes
        assert probe.cluster == "c1"
        await asyncio.wait_for(probe.serving.wait(), 10)
        assert "agent-probe" in {t.get_name() for t in asyncio.all_tasks()}
        nats_server.stop()
        nats_server.start()
        await nats_server.wait_ready()
        await wait_for(lambda: probe.resets >= 1, what="the probe reset after the reconnect", timeout=30)
        await wait_for(lambda: _registry_up(platform.nc), what="the registry back", timeout=30)
    finally:
        await agent.stop()
    assert probes[0].closed == 1
