"""Fault suite: services killed, agents paused and cut off, NATS restarted, hundreds of agents reconnecting.

Each scenario runs a stream of operations through the API, then checks the whole history (``History``):
no command lost, none applied twice, none out of order, and the final state is the desired one.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path

import pytest
from nats.js.api import ConsumerInfo

from schemas import subjects
from schemas.messages import ClusterConnectInfo, ClusterCreate
from services.bus import call
from tests.bench.fleet import Fleet
from tests.chaos.history import History, Operator
from tests.chaos.proxy import Proxy
from tests.harness import Proc, Stack, monitor, wait_for

pytestmark = pytest.mark.chaos

PROJECT = "p"


async def connect_agents(stack: Stack, tmp_path: Path, names: list[str]) -> dict[str, Path]:
    dirs: dict[str, Path] = {}
    for name in names:
        dirs[name] = tmp_path / f"agent-{name}"
        await stack.connected(name, dirs[name])
    return dirs


async def create_tenants(stack: Stack, tenants: dict[str, str], history: History) -> None:
    await stack.ok("POST", "/api/v1/projects", json={"name": PROJECT})
    for name, cluster in tenants.items():
        sent = time.time()
        out = await stack.ok("POST", f"/api/v1/projects/{PROJECT}/tenants", json={"name": name, "cluster": cluster})
        history.record(out, sent, time.time())
    for name in tenants:
        await stack.wait_synced("tenant", PROJECT, name)


def verdict(history: History, dirs: dict[str, Path], final: dict[str, object]) -> None:
    problems = history.check(history.read_clusters(dirs), final)  # type: ignore[arg-type]
    assert not problems, "\n".join(problems[:30])


async def test_kill9_each_service_in_turn_during_operations(stack: Stack, tmp_path: Path) -> None:
    dirs = await connect_agents(stack, tmp_path, ["c0", "c1", "c2"])
    tenants = {f"t{i}": f"c{i % 3}" for i in range(6)}
    history = History()
    await create_tenants(stack, tenants, history)
    op = Operator(stack, history, PROJECT, tenants)
    await asyncio.gather(*(op.refresh(n) for n in tenants))
    stop = asyncio.Event()
    stream = asyncio.create_task(op.run(stop))
    try:
        for name in ("registry", "access", "lifecycle", "health", "api"):
            await asyncio.sleep(1.5)
            stack.services[name].kill9()
            await asyncio.sleep(0.3)
            stack.restart_service(name)
            await stack.wait_healthy()
        await asyncio.sleep(1.5)
    finally:
        stop.set()
        await stream
    final = await op.settle(timeout=60)
    verdict(history, dirs, final)
    assert len(history.acked) >= 30, f"only {len(history.acked)} operations acknowledged"


def agent_proc(stack: Stack, state_dir: Path, server: str, token: str | None, name: str, **env: str) -> Proc:
    argv = [sys.executable, "-m", "agent", "run", "--server", server, "--driver", "sim", "--state-dir", str(state_dir)]
    if token:
        argv += ["--token", token]
    proc = Proc(name=name, argv=argv, env=stack.env(**env), log=stack.tmp / "logs" / f"{name}.log").start()
    stack.agents.append(proc)
    return proc


async def test_agent_paused_past_ack_wait_and_agent_cut_off(stack: Stack, tmp_path: Path) -> None:
    """Agent ``ca`` is stopped (SIGSTOP) in the middle of an apply and stays stopped past the CMD consumer's
    30 s ack wait; meanwhile agent ``cb``'s link to NATS (through a proxy) is cut while operations are issued,
    then restored. Both come back and the history is sound."""
    assert stack.nats is not None
    proxy = await Proxy("127.0.0.1", stack.nats.config.port).start()
    try:
        dirs = {"ca": tmp_path / "agent-ca", "cb": tmp_path / "agent-cb"}
        # ca applies slowly (1 s per apply), so that it can be caught in the middle of one.
        info = await stack.connect_cluster("ca")
        a = agent_proc(stack, dirs["ca"], stack.nats_url, info["token"], "agent-ca", TETHER_SIM_APPLY_DELAY="1")
        info = await stack.connect_cluster("cb")
        agent_proc(stack, dirs["cb"], proxy.url, info["token"], "agent-cb")
        await stack.wait_online("ca")
        await stack.wait_online("cb")
        tenants_a = {"ta1": "ca", "ta2": "ca"}
        tenants_b = {"tb1": "cb", "tb2": "cb", "tb3": "cb"}
        history = History()
        await create_tenants(stack, {**tenants_a, **tenants_b}, history)
        op_a = Operator(stack, history, PROJECT, tenants_a, deletes=False)
        op_b = Operator(stack, history, PROJECT, tenants_b, seed=2)
        await asyncio.gather(*(op_a.refresh(n) for n in tenants_a), *(op_b.refresh(n) for n in tenants_b))

        # Catch ca in the middle of an apply: the command is delivered and not acknowledged.
        rng = __import__("random").Random(7)
        nc = await stack.nc()
        try:
            await op_a.step("ta1", rng)
            await asyncio.sleep(0.4)
            assert a.proc is not None
            a.proc.send_signal(signal.SIGSTOP)
            paused_at = time.monotonic()
            info_a = await nc.jetstream().consumer_info(subjects.desired_stream("ca"), subjects.agent_consumer("ca"))
            assert info_a.num_ack_pending == 1, "the agent was not caught in the middle of an apply"

            # While ca sleeps: two more operations for it, and cb's link is cut with operations going on.
            await op_a.step("ta2", rng)
            await op_a.step("ta1", rng)
            stop = asyncio.Event()
            stream = asyncio.create_task(op_b.run(stop, pause=0.2))
            await asyncio.sleep(1.5)
            proxy.cut()
            await stack.wait_online("cb", online=False, timeout=15)
            await asyncio.sleep(3)
            proxy.restore()
            await stack.wait_online("cb", timeout=30)
            await asyncio.sleep(2)
            stop.set()
            await stream

            # Past the ack wait: JetStream considers the delivery lost and will deliver it again.
            await asyncio.sleep(max(0.0, 31.5 - (time.monotonic() - paused_at)))
            a.proc.send_signal(signal.SIGCONT)
            final_a = await op_a.settle(timeout=60)
            final_b = await op_b.settle(timeout=60)

            async def drained() -> ConsumerInfo | None:
                # Lifecycle's write of the last result follows the settle: the agent acks it without applying.
                info = await nc.jetstream().consumer_info(subjects.desired_stream("ca"), subjects.agent_consumer("ca"))
                return info if info.num_pending == 0 and info.num_ack_pending == 0 else None

            info_a = await wait_for(drained, timeout=30, what="ca's consumer to drain")
        finally:
            await nc.close()
        assert info_a.num_redelivered == 0
        verdict(history, dirs, {**final_a, **final_b})
        assert a.running, "the paused agent did not survive"
        assert len([x for x in history.acked if x.cluster == "cb"]) >= 8
    finally:
        await proxy.close()


async def test_nats_restarted_with_pending_commands(stack: Stack, tmp_path: Path) -> None:
    """c2's agent is down, so its commands wait in CMD; NATS is killed (-9) and restarted while operations
    go on for every cluster; then c2's agent comes back. Everything acknowledged is applied once, in order."""
    assert stack.nats is not None
    dirs = await connect_agents(stack, tmp_path, ["c0", "c1", "c2"])
    tenants = {f"t{i}": f"c{i % 3}" for i in range(6)}
    history = History()
    await create_tenants(stack, tenants, history)
    op = Operator(stack, history, PROJECT, tenants)
    await asyncio.gather(*(op.refresh(n) for n in tenants))
    down = stack.agents[2]
    down.stop()
    stop = asyncio.Event()
    stream = asyncio.create_task(op.run(stop, pause=0.1))
    try:
        await asyncio.sleep(2)
        stack.nats.kill()
        await asyncio.sleep(1)
        stack.nats.start()
        await stack.nats.wait_ready()
        await asyncio.sleep(4)
    finally:
        stop.set()
        await stream
    waiting = [x for x in history.acked if x.cluster == "c2" and x.operation != "create"]
    assert waiting, "no command waited for the stopped agent"
    agent_proc(stack, dirs["c2"], stack.nats_url, None, "agent-c2-again")
    final = await op.settle(timeout=90)
    verdict(history, dirs, final)


async def test_hundreds_of_agents_reconnect_at_once(stack: Stack, tmp_path: Path) -> None:
    """500 in-process agents (each with its own connection and credentials) lose NATS at once, with commands
    pending. They all come back without a storm of failures, and every pending command is applied once."""
    assert stack.nats is not None
    n = 500
    nc = await stack.nc()
    names = [f"f{i:03d}" for i in range(n)]
    tokens: dict[str, str | None] = {}
    for name in names:
        info = await call(nc, subjects.Registry.CLUSTER_CREATE, ClusterCreate(name=name), ClusterConnectInfo)
        tokens[name] = info.token
    await nc.close()
    fleet = Fleet(
        server=stack.nats_url, agents=tokens, state_root=tmp_path / "fleet", log_dir=stack.tmp / "logs", workers=2
    )
    try:
        await fleet.spawn()
        await fleet.start()
        await fleet.wait_up(names, timeout=60)

        async def all_online() -> bool:
            clusters = (await stack.ok("GET", "/api/v1/clusters"))["items"]
            return sum(1 for c in clusters if c["name"] in tokens and c["online"]) == n

        await wait_for(all_online, timeout=30, interval=0.5, what=f"{n} agents online")
        tenants = {f"t{i}": names[i * 20] for i in range(10)}
        history = History()
        await create_tenants(stack, tenants, history)
        op = Operator(stack, history, PROJECT, tenants, deletes=False)
        await asyncio.gather(*(op.refresh(t) for t in tenants))

        # Commands pending (the agents hold back), then NATS goes away under all of them.
        declared = (await fleet.stats())["declarations"]
        assert declared == 0, f"{declared} agents found no command consumer after their hello"
        await fleet.gate(False)
        await asyncio.sleep(0.5)
        rng = __import__("random").Random(3)
        for t in tenants:
            await op.step(t, rng)
        since = time.time()
        stack.nats.stop()
        await fleet.gate(True)
        await asyncio.sleep(1)
        stack.nats.start()
        await stack.nats.wait_ready()
        restarted = time.monotonic()

        async def back() -> bool:
            stats = await fleet.stats(since=since)
            return bool(stats["reconnected"] == n and stats["connected"] == n)

        await wait_for(back, timeout=60, interval=0.5, what=f"{n} agents reconnected")
        took = time.monotonic() - restarted
        final = await op.settle(timeout=60)
        await wait_for(all_online, timeout=30, interval=0.5, what=f"{n} agents online again")
        dirs = {c: fleet.state_dir(c) for c in set(tenants.values())}
        verdict(history, dirs, final)
        stats = await fleet.stats(since=since)
        assert stats["live"] == n, "agents stopped"
        # The consumers' state is in nats-server's memory, so the lone server's restart lost them: each agent's
        # first fetch found its own gone and asked for it once with its hello (no look-up first), not in a loop.
        assert n <= stats["declarations"] <= 2 * n, f"{stats['declarations']} asks for {n} lost command consumers"

        # No storm of failures: jittered reconnects, and JetStream's API was not overrun.
        jsz = monitor(stack.nats, "/jsz") or {}
        api = jsz.get("api") or {}
        assert api.get("errors", 0) <= n // 10, f"JetStream API errors after the restart: {api}"
        logs = "".join(p.read_text(errors="replace") for p in (stack.tmp / "logs").glob("worker-*.log"))
        errors = re.findall(r" ERROR ", logs)
        assert len(errors) <= n // 20, f"{len(errors)} errors logged by {n} agents:\n{logs[-3000:]}"
        assert took < 45, f"{n} agents took {took:.1f}s to reconnect"
    finally:
        await fleet.stop()
        fleet.kill9()
