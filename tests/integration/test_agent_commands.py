"""The command path against a real nats-server (promises 2, 3, 4 and 8).

A command is a desired-state record under ``<cluster>.<kind>.<project>.<name>``, which the cluster's agent
follows through its durable consumer. Records written while the agent is away wait for it and are applied
in order, exactly once, when it comes; each produces one result, which the agent asks lifecycle to record
(here a stand-in for lifecycle's endpoint that records each result once, like lifecycle's compare-and-set,
and can stop answering) and acks only once answered; a record written again is found already applied by the
agent's revision check; a ``kill -9`` in the middle of an apply loses nothing and applies nothing twice; a
lifecycle outage holds the cluster's next command; a new consumer starts from the last record of each object.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from nats.js.errors import NotFoundError

from agent import capabilities, command_loop, commands, running
from agent.capabilities import Context
from agent.drivers.sim import APPLY_DELAY_ENV, FAIL_ENV, UID_ENV, read_state
from agent.errors import PermanentError
from agent.identity import session
from agent.running import Agent
from agent.settings import AgentSettings
from schemas import subjects
from schemas.messages import (
    ClusterConnectInfo,
    ClusterCreate,
    Command,
    CommandResult,
    DesiredState,
    Inventory,
    M,
    ResultRecorded,
    WorkloadRecord,
    WorkloadSpec,
    decode,
    desired_key,
    encode,
    workload_key,
)
from services.bus import limits
from services.bus.endpoints import call
from services.bus.settings import BusSettings, ServiceSettings
from services.bus.streams import ensure_bucket, platform_streams, retire_cmd_streams
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
    recorded: list[CommandResult] = field(default_factory=list)
    """Results the stand-in for lifecycle recorded, in order, each once."""
    asked: int = 0
    answering: bool = True
    """False: a lifecycle outage (requests get no answer)."""

    async def serve_results(self) -> None:
        """Answer agents' result requests as lifecycle does: a repeat is answered "already", not recorded."""
        await self.nc.subscribe(subjects.agent_calls(subjects.Lifecycle.AGENT_RESULT), cb=self._on_result)

    async def _on_result(self, msg: Msg) -> None:
        self.asked += 1
        if not self.answering:
            return
        result = decode(msg.data, CommandResult)
        seen = any(
            (r.op_id, r.generation, r.cluster) == (result.op_id, result.generation, result.cluster)
            for r in self.recorded
        )
        if not seen:
            self.recorded.append(result)
        await msg.respond(encode(ResultRecorded(outcome="already" if seen else "recorded")))

    async def connect_cluster(self, name: str) -> str:
        info = await call(self.nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=name), ClusterConnectInfo)
        return info.token

    async def send(self, command: Command) -> None:
        """Write the desired-state record ``command`` is, under its cluster's key, as lifecycle does."""
        spec = command.spec
        record = WorkloadRecord(
            spec=spec,
            generation=command.generation,
            op_id=command.op_id,
            operation=command.operation,
            updated_at=command.issued_at,
        )
        await self.js.publish(
            f"{subjects.desired_prefix(spec.cluster)}{desired_key(spec.cluster, workload_key(spec))}", encode(record)
        )

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
        return [r for r in self.recorded if r.cluster == cluster]

    async def cmd_pending(self) -> int:
        """Records c1's agent has not acknowledged yet."""
        info = await self.js.consumer_info(subjects.desired_stream("c1"), subjects.agent_consumer("c1"))
        return int(info.num_pending + info.num_ack_pending)


async def desired_buckets(js: JetStreamContext) -> None:
    """The desired-state buckets, as lifecycle declares them."""
    for bucket in subjects.DESIRED_BUCKETS:
        await ensure_bucket(js, bucket, WorkloadRecord, replicas=1, history=limits.DESIRED_HISTORY)


@pytest.fixture
async def platform(nats_server: NatsServer) -> AsyncIterator[Platform]:
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    await desired_buckets(js)
    for config in platform_streams(1):
        await js.add_stream(config)
    registry = asyncio.create_task(
        run_registry(RegistrySettings(common=ServiceSettings(bus=BusSettings(url=nats_server.url)))),
        name="registry",
    )
    try:
        await wait_for(lambda: _registry_up(nc), what="the registry", timeout=20)
        p = Platform(url=nats_server.url, nc=nc, js=js)
        await p.serve_results()
        yield p
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
        operation="create",
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


async def connected_once(platform: Platform, token: str, state_dir: Path) -> None:
    """The agent connects (the platform makes its consumer at the bootstrap) and stops: a cluster that was
    connected before the outage."""
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings) as agent:
        await wait_for(lambda: agent.commands.queue.bound, what="the agent bound to its consumer")


async def test_commands_wait_for_the_agent_and_apply_once_in_order(platform: Platform, tmp_path: Path) -> None:
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    await connected_once(platform, token, state_dir)
    # The outage: every command is issued while the agent is away.
    for c in PLAN:
        await platform.send(c)
    assert await platform.cmd_pending() == 5

    settings = AgentSettings(server=platform.url, state_dir=state_dir, heartbeat_interval=0.5, inventory_interval=1.0)
    async with Agent(settings) as agent:
        await wait_for(lambda: len(read_state(state_dir)["log"]) >= 5, what="5 applies")
        results = await wait_for(lambda: _at_least(platform.results("c1"), 5), what="5 results recorded")
        assert applied_log(state_dir) == EXPECTED
        assert [(r.op_id, r.generation, r.ok, r.applied) for r in results] == [
            (c.op_id, c.generation, True, True) for c in PLAN
        ]
        assert results[3].state == "running" and results[3].version == "v1.36.0"
        assert results[4].state == "deleted"
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the work queue to drain")
        assert agent.commands_applied == 5

        # The same record written again: the agent finds it applied, and its result is answered "already".
        await platform.send(PLAN[3])
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the record written again to be acked")
        # The same generation under a new operation (a resync): reported, not applied.
        resync = Command(op_id="resync-1", generation=3, issued_at=9.0, operation="resync", spec=PLAN[3].spec)
        await platform.send(resync)
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


async def test_a_new_consumer_starts_from_the_last_record_of_each_object(platform: Platform, tmp_path: Path) -> None:
    """Written before the cluster's consumer existed (its records kept, the cluster registered again): the
    consumer made at registration starts from the last record of each object, so the agent applies the desired
    state, not its history; one result each."""
    for c in PLAN:
        await platform.send(c)
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings):
        results = await wait_for(lambda: _at_least(platform.results("c1"), 2), what="the two objects' results")
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the consumer to drain")
    assert [(r.op_id, r.generation, r.state) for r in results] == [("op-4", 3, "running"), ("op-5", 2, "deleted")]
    assert [e for e in applied_log(state_dir) if e[1] == "t1"] == [("op-4", "t1", 3, "running")]


async def test_records_written_before_the_first_connect_are_applied_in_order(
    platform: Platform, tmp_path: Path
) -> None:
    """The consumer is made when the cluster is registered, so what is asked of a cluster before its agent first
    connects is applied like a returning agent's backlog: every record, in the order written, each once."""
    token = await platform.connect_cluster("c1")
    for c in PLAN:
        await platform.send(c)
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings):
        results = await wait_for(lambda: _at_least(platform.results("c1"), len(PLAN)), what="every record's result")
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the consumer to drain")
    assert [r.op_id for r in results] == [c.op_id for c in PLAN]
    assert applied_log(state_dir) == [(c.op_id, c.spec.name, c.generation, c.spec.state) for c in PLAN]


async def test_failures_are_reported_and_do_not_block_the_queue(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAIL_ENV, "broken")
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings):
        await platform.send(command(1, "broken", 1))
        # Malformed: not reported (nothing to attribute it to), terminated, and the queue moves on.
        await platform.js.publish(f"{subjects.desired_prefix('c1')}c1.tenant.p1.garbage", b"{garbage")
        await platform.send(command(2, "fine", 1))
        results = await wait_for(lambda: _at_least(platform.results("c1"), 2), what="two results")
        assert [(r.op_id, r.ok, r.reason) for r in results] == [("op-1", False, "SimulatedFailure"), ("op-2", True, "")]
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the work queue to drain")
        assert applied_log(state_dir) == [("op-2", "fine", 1, "running")]


async def test_a_lifecycle_outage_holds_the_next_command_and_loses_nothing(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A result nobody answers: the agent keeps its command in progress (not acked) and asks again with
    backoff, so the cluster's next command waits; once lifecycle answers, each is recorded once and acked,
    each applied once, in order."""
    monkeypatch.setattr(command_loop, "RECORD_TIMEOUT", 0.5)
    monkeypatch.setattr(commands, "RECORD_BACKOFF", (0.1, 0.4))
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    settings = AgentSettings(server=platform.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
    async with Agent(settings):
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="the agent's consumer")
        platform.answering = False
        await platform.send(command(1, "t1", 1))
        await platform.send(command(2, "t1", 2, "sleeping"))
        await wait_for(lambda: len(read_state(state_dir)["log"]) == 1, what="the first apply")
        asked = platform.asked
        await wait_for(lambda: platform.asked >= asked + 3, what="the result asked again", timeout=30)
        assert applied_log(state_dir) == [("op-1", "t1", 1, "running")], "the next command waits for the answer"
        assert await platform.cmd_pending() == 2 and platform.recorded == []
        platform.answering = True
        results = await wait_for(lambda: _at_least(platform.results("c1"), 2), what="both results", timeout=30)
        await wait_for(lambda: _eq(platform.cmd_pending(), 0), what="both acked")
    assert applied_log(state_dir) == [("op-1", "t1", 1, "running"), ("op-2", "t1", 2, "sleeping")]
    assert [(r.op_id, r.applied) for r in results] == [("op-1", True), ("op-2", True)]


async def test_the_agent_is_served_before_lifecycle_runs(nats_server: NatsServer, tmp_path: Path) -> None:
    """The registry declares the desired-state bucket too (it makes the agents' consumers on its stream): an
    agent connecting before lifecycle ever ran is bound, and applies what is written once lifecycle is up."""
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
        await p.serve_results()
        token = await p.connect_cluster("c1")
        state_dir = tmp_path / "agent"
        settings = AgentSettings(server=p.url, token=token, state_dir=state_dir, heartbeat_interval=0.5)
        async with Agent(settings):
            await p.send(command(1, "t1", 1))
            await wait_for(lambda: len(read_state(state_dir)["log"]) == 1, what="the apply", timeout=40)
    finally:
        registry.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await registry
        await nc.close()


@pytest.mark.chaos
async def test_kill_9_mid_apply_loses_nothing_and_applies_nothing_twice(platform: Platform, tmp_path: Path) -> None:
    token = await platform.connect_cluster("c1")
    state_dir = tmp_path / "agent"
    await connected_once(platform, token, state_dir)
    for c in PLAN:
        await platform.send(c)
    log_path = tmp_path / "agent.log"
    env = {**os.environ, APPLY_DELAY_ENV: "0.7", "TETHER_LOG_LEVEL": "INFO"}
    argv = [sys.executable, "-m", "agent", "run", "--server", platform.url, "--state-dir", str(state_dir)]

    def start(extra: list[str]) -> subprocess.Popen[bytes]:
        with open(log_path, "ab") as out:
            return subprocess.Popen(
                argv + extra, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
            )

    proc = start([])
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
        await platform.send(command(1, "t1", 1))
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
        await platform.send(command(1, "t1", 1))
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


async def test_the_command_streams_of_earlier_versions_are_retired(nats_server: NatsServer) -> None:
    """Earlier versions kept a copy of every command in ``CMD`` (then ``CMD_00``..``CMD_15``). They are deleted,
    full or not: each command in them was a copy of a desired-state record, which the agents follow now."""
    await nats_server.wait_ready()
    nc = await nats.connect(nats_server.url)
    js = nc.jetstream()
    try:
        await js.add_stream(
            StreamConfig(name="CMD_03", subjects=["tether.cmd.03.>"], retention=RetentionPolicy.WORK_QUEUE)
        )
        await js.publish("tether.cmd.03.c1.apply", b"{}")
        await retire_cmd_streams(js)
        await retire_cmd_streams(js)  # nothing left: nothing to do
        for name in subjects.RETIRED_CMD_STREAMS:
            with pytest.raises(NotFoundError):
                await js.stream_info(name)
    finally:
        await nc.close()


async def test_an_agent_still_on_a_cmd_stream_is_told_to_upgrade(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent of the earlier protocol (its hello says no ``protocol``: 1) would wait forever on a ``CMD_*``
    consumer that no longer exists; the registry refuses its hello saying to upgrade, and it stops with that."""
    token = await platform.connect_cluster("c1")
    monkeypatch.setattr(session, "AGENT_PROTOCOL", 1)
    settings = AgentSettings(server=platform.url, token=token, state_dir=tmp_path / "agent", heartbeat_interval=0.5)
    with pytest.raises(PermanentError, match=r"CMD_\* stream .* upgrade the agent"):
        async with asyncio.timeout(60):
            await Agent(settings).start()


class Probe:
    """A capability that only records what the agent does with it."""

    def __init__(self, ctx: Context) -> None:
        self.cluster = ctx.cluster
        self.serving = asyncio.Event()
        self.resets = 0
        self.closed = 0
        self.listened = 0

    async def listen(self) -> None:
        self.listened += 1

    async def serve(self) -> None:
        assert self.listened, "listening before serving (before the first heartbeat)"
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
