"""One worker process of the benchmark (and of the chaos tests): many in-process agents.

Started as ``python -m tests.bench.worker CONFIG.json``. Every agent is a real ``agent.running.Agent``
with the ``sim`` driver, its own state dir, its own NATS connection and its own credentials (it trades
its connect token on first start, exactly like ``python -m agent run --token ...``). Only the driving is
different: the worker is steered over stdin/stdout with one JSON object per line.

Requests (stdin) and their answers (stdout, ``{"id": <request id>, ...}``):

- ``{"op": "start", "clusters": [...]?}``: start those agents (default: all), all at once; every agent
  reports ``{"ev": "up", "cluster", "t"}`` when it has said hello and sent its first heartbeat, or
  ``{"ev": "failed", ...}``.
- ``{"op": "kill", "clusters": [...]}``: stop those agents without a goodbye (tasks cancelled, socket
  closed, nothing drained); answers each one's last heartbeat time.
- ``{"op": "gate", "open": bool}``: while closed, no agent fetches a command (they stay connected).
- ``{"op": "stats", "since": t}``: counts (connected, reconnected/inventory sent after ``since``,
  command consumers created or updated), the latest of those times, and this process's RSS.
- ``{"op": "times", "since": t}``: per live agent, seconds after ``since`` of its last reconnect, hello and
  inventory (those after ``since``).
- ``{"op": "silences", "marks": {cluster: t}, "since": t}``: per cluster, seconds from its agent's last
  heartbeat sent before ``t`` (or from ``since``, if none since) to ``t``: how long the agent itself had been
  silent when health marked it offline at ``t``.
- ``{"op": "steps", "clear": bool}``: the connect path's step durations so far (``tests.bench.steps``);
  with ``clear``, forgotten after the answer (a later phase then sees only its own).
- ``{"op": "stop"}``: stop every agent in order, answer, exit.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import gc
import json
import logging
import os
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from agent.bus import CommandQueue
from agent.cli import new_event_loop
from agent.running import Agent, settle_heap
from agent.settings import AgentSettings
from agent.telemetry import tracer_provider
from tests.bench import steps

logger = logging.getLogger("tests.bench.worker")

KEPT_BEATS = 128
"""Heartbeat times kept per agent at least (10 minutes at the benchmark's 5 s): 8 bytes each."""


def rss_bytes(pid: int | str = "self") -> int:
    """Resident set size of a process (Linux ``/proc``), 0 when it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


class BenchAgent(Agent):
    """An agent that notes when it last sent a heartbeat and an inventory, and that can be held back."""

    def __init__(self, settings: AgentSettings, *, gate: asyncio.Event, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.gate = gate
        self.reconnected_at = 0.0
        self.hello_at = 0.0
        self.up_at = 0.0
        self.beats = array("d")
        """When this agent's recent heartbeats went out (the latest ``KEPT_BEATS`` at least)."""

    @property
    def last_beat(self) -> float:
        return self._heartbeats.last_at if self._heartbeats is not None else 0.0

    @property
    def inventory_at(self) -> float:
        return self._inventory.last_at if self._inventory is not None else 0.0

    @property
    def queue(self) -> CommandQueue | None:
        return self._commands.queue if self._commands is not None else None

    @property
    def connected(self) -> bool:
        return self._session is not None and self._session.connection.is_connected

    async def _start(self) -> None:
        await super()._start()
        queue = self.commands.queue
        fetch = queue.next

        async def gated() -> Any:
            # While the gate is closed the agent stays connected and heartbeats, but fetches nothing; and what a
            # pull already waiting when it closed brings is held until it opens (an idle agent is always inside
            # such a pull: without this, phase 5's "pending" commands were applied before the restart).
            await self.gate.wait()
            got = await fetch()
            await self.gate.wait()
            return got

        queue.next = gated  # type: ignore[method-assign]
        self.connection.on_reconnected(self._note_reconnect)
        heartbeats = self.heartbeats
        beat = heartbeats.beat

        async def noted() -> None:
            before = heartbeats.last_at
            await beat()
            if heartbeats.last_at != before:  # sent (a beat with the link down is skipped)
                if len(self.beats) >= 2 * KEPT_BEATS:
                    del self.beats[:KEPT_BEATS]
                self.beats.append(heartbeats.last_at)

        heartbeats.beat = noted  # type: ignore[method-assign]

    def silence(self, at: float, since: float) -> float:
        """Seconds this agent had sent no heartbeat for at ``at`` (counted from ``since`` at most)."""
        i = bisect.bisect_right(self.beats, at)
        last = self.beats[i - 1] if i else since
        return at - max(last, since)

    def _note_reconnect(self) -> None:
        self.reconnected_at = time.time()

    def _after_hello(self) -> None:
        self.hello_at = time.time()  # a hello after a reconnect (the first one is part of ``up_at``)
        super()._after_hello()

    async def kill(self) -> float:
        """Die without a goodbye: the heartbeats stop, the socket closes, nothing is drained."""
        main = self._main
        if main is not None and not main.done():
            main.cancel()
            await asyncio.wait({main})
        conn = self._session.connection if self._session is not None else None
        if conn is not None and conn._nc is not None:
            with contextlib.suppress(Exception):
                await conn._nc.close()
        return self.last_beat


class Worker:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        # One for all, made like a deployed agent's: exporting only where the environment says so.
        self.provider = tracer_provider()
        self.gate = asyncio.Event()
        self.gate.set()
        self.specs: dict[str, dict[str, Any]] = {a["cluster"]: a for a in config["agents"]}
        self.agents: dict[str, BenchAgent] = {}
        self.out = sys.stdout
        self.tasks: set[asyncio.Task[None]] = set()
        self.settled = False
        """The heap was frozen once all of this worker's agents were up."""
        self.up_count = 0
        """Agents that came up (again, after a kill, counted again)."""
        self.starting = asyncio.Semaphore(int(config.get("start_concurrency") or 1_000_000))
        """Agents starting at once in this process (a fleet rolls out in waves, not in one instant)."""

    def emit(self, **obj: Any) -> None:
        self.out.write(json.dumps(obj) + "\n")
        self.out.flush()

    def settings(self, cluster: str) -> AgentSettings:
        spec = self.specs[cluster]
        return AgentSettings(
            server=self.config["server"],
            token=spec.get("token") or None,
            driver="sim",
            state_dir=Path(spec["state_dir"]),
            sim_nodes=3,
            request_timeout=float(self.config.get("request_timeout", 5.0)),
            shutdown_timeout=2.0,
        )

    async def start_one(self, cluster: str) -> None:
        old = self.agents.get(cluster)
        if old is not None:
            await old.stop()  # a killed one: release its state lock
        agent = BenchAgent(self.settings(cluster), gate=self.gate, tracer_provider=self.provider)
        self.agents[cluster] = agent
        try:
            async with self.starting:
                await agent.start()
        except Exception as exc:
            self.emit(ev="failed", cluster=cluster, error=f"{type(exc).__name__}: {exc}", t=time.time())
            return
        agent.up_at = time.time()
        self.emit(ev="up", cluster=cluster, t=agent.up_at)
        # Counted, not found by walking every agent at each one up (2,500 agents per worker: 3 million checks,
        # 1.2 % of the workers' CPU in phase 1 at 10,000 agents).
        self.up_count += 1
        if not self.settled and self.up_count >= len(self.specs) and all(a.up_at for a in self.agents.values()):
            # A real agent is a process of its own with a small heap; here one holds hundreds, and a full
            # collection walking all of them (up to 0.5-0.8 s measured) stalled every agent of the process.
            self.settled = True
            settle_heap()
        elif not self.settled:
            # What a real agent's settle_heap does once it is up, less the collection: here a collection walks
            # every agent of the process, which no real agent does. Without it, while 2,500 agents came up in a
            # worker, full collections over the growing heap took 4.7-4.9 s of its 14.5 s of CPU (10,000 agents,
            # gc callbacks). gc.freeze moves the generations aside in constant time.
            gc.freeze()

    async def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        if op == "start":
            names = req.get("clusters") or list(self.specs)
            for name in names:
                task = asyncio.create_task(self.start_one(name), name=f"start-{name}")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            return {"starting": len(names)}
        if op == "kill":
            beats = {}
            for name in req["clusters"]:
                agent = self.agents.get(name)
                if agent is not None:
                    beats[name] = await agent.kill()
            return {"last_beat": beats, "t": time.time()}
        if op == "gate":
            if req.get("open", True):
                self.gate.set()
            else:
                self.gate.clear()
            return {"open": self.gate.is_set()}
        if op == "stats":
            since = float(req.get("since", 0.0))
            live = [a for a in self.agents.values() if a._main is not None and not a._main.done()]
            connected = [a for a in live if a.connected]
            reconnected = [a.reconnected_at for a in live if a.reconnected_at > since]
            inventories = [a.inventory_at for a in live if a.inventory_at > since and a.reconnected_at > since]
            return {
                "agents": len(self.agents),
                "live": len(live),
                "connected": len(connected),
                "applied": sum(a.commands_applied for a in self.agents.values()),
                "declarations": sum(a.queue.declarations for a in self.agents.values() if a.queue is not None),
                "bound": sum(1 for a in live if a.queue is not None and a.queue.bound),
                "reconnected": len(reconnected),
                "reconnected_last": max(reconnected, default=0.0),
                "inventoried": len(inventories),
                "inventoried_last": max(inventories, default=0.0),
                "rss": rss_bytes(),
            }
        if op == "times":
            since = float(req["since"])
            live = [a for a in self.agents.values() if a._main is not None and not a._main.done()]
            return {
                what: [t - since for t in (getattr(a, attr) for a in live) if t > since]
                for what, attr in (
                    ("reconnected", "reconnected_at"),
                    ("hello", "hello_at"),
                    ("inventory", "inventory_at"),
                )
            }
        if op == "silences":
            since = float(req["since"])
            return {
                "silences": {
                    name: self.agents[name].silence(float(at), since)
                    for name, at in req["marks"].items()
                    if name in self.agents
                }
            }
        if op == "steps":
            answer = {"steps": dict(steps.STEPS)}
            if req.get("clear"):
                steps.STEPS.clear()
            return answer
        if op == "stop":
            await asyncio.gather(*(a.stop() for a in self.agents.values()), return_exceptions=True)
            return {"stopped": len(self.agents)}
        raise ValueError(f"unknown op {op!r}")

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        self.emit(ev="ready", pid=os.getpid())
        while True:
            line = await reader.readline()
            if not line:
                break  # the driver went away: stop everything
            req = json.loads(line)
            try:
                answer = await self.handle(req)
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            self.emit(id=req.get("id"), **answer)
            if req.get("op") == "stop":
                return
        await asyncio.gather(*(a.stop() for a in self.agents.values()), return_exceptions=True)


def main() -> None:
    config = json.loads(Path(sys.argv[1]).read_text())
    steps.install()
    logging.basicConfig(
        level=os.environ.get("TETHER_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The agent's own loop (agent.cli).
    with asyncio.Runner(loop_factory=new_event_loop) as run:
        run.run(Worker(config).serve())


if __name__ == "__main__":
    main()
