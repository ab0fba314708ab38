"""A fleet of in-process agents spread over a few worker processes (``tests.bench.worker``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness import ROOT


@dataclass
class WorkerProc:
    index: int
    clusters: list[str]
    proc: asyncio.subprocess.Process
    log: Path
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    reader: asyncio.Task[None] | None = None


@dataclass
class Fleet:
    """``agents``: cluster name -> connect token (None once connected); state dirs under ``state_root``."""

    server: str
    agents: dict[str, str | None]
    state_root: Path
    log_dir: Path
    workers: int = 2
    start_concurrency: int = 0
    """Agents starting at once per worker (0: all at once)."""
    env: dict[str, str] = field(default_factory=dict)
    cpus: frozenset[int] | None = None
    """The CPUs the workers run on (``--fleet-cpus``); None: wherever the bench runs."""
    on_event: Callable[[dict[str, Any]], None] | None = None
    procs: list[WorkerProc] = field(default_factory=list)
    up: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def state_dir(self, cluster: str) -> Path:
        return self.state_root / cluster

    def owner(self, cluster: str) -> WorkerProc:
        for w in self.procs:
            if cluster in w.clusters:
                return w
        raise KeyError(cluster)

    async def spawn(self) -> None:
        names = list(self.agents)
        n = max(1, min(self.workers, len(names)))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        env.setdefault("TETHER_LOG_LEVEL", "WARNING")
        env.update(self.env)
        for i in range(n):
            part = names[i::n]
            config = {
                "server": self.server,
                "start_concurrency": self.start_concurrency,
                "agents": [{"cluster": c, "token": self.agents[c], "state_dir": str(self.state_dir(c))} for c in part],
            }
            path = self.log_dir / f"worker-{i}.json"
            path.write_text(json.dumps(config))
            log = self.log_dir / f"worker-{i}.log"
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.bench.worker",
                str(path),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=open(log, "ab"),  # noqa: SIM115 (the child keeps it)
                cwd=ROOT,
                env=env,
                limit=64 * 1024 * 1024,
                start_new_session=True,
                # In the child before it runs, so that every thread it starts is held to them too.
                preexec_fn=(lambda cpus=self.cpus: os.sched_setaffinity(0, cpus)) if self.cpus else None,
            )
            w = WorkerProc(index=i, clusters=part, proc=proc, log=log)
            ready: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
            w.pending[0] = ready
            w.reader = asyncio.create_task(self._read(w), name=f"fleet-reader-{i}")
            self.procs.append(w)
            await asyncio.wait_for(ready, 60)

    async def _read(self, w: WorkerProc) -> None:
        assert w.proc.stdout is not None
        while True:
            line = await w.proc.stdout.readline()
            if not line:
                for fut in w.pending.values():
                    if not fut.done():
                        fut.set_exception(RuntimeError(f"worker {w.index} exited; see {w.log}"))
                return
            msg = json.loads(line)
            ev = msg.get("ev")
            if ev == "ready":
                fut = w.pending.pop(0, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)
                continue
            if ev == "up":
                self.up[msg["cluster"]] = msg["t"]
                self.failed.pop(msg["cluster"], None)
            elif ev == "failed":
                self.failed[msg["cluster"]] = msg["error"]
            if ev is not None:
                if self.on_event is not None:
                    self.on_event(msg)
                continue
            fut = w.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def ask(self, w: WorkerProc, timeout: float = 120.0, **req: Any) -> dict[str, Any]:
        rid = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        w.pending[rid] = fut
        assert w.proc.stdin is not None
        w.proc.stdin.write((json.dumps({"id": rid, **req}) + "\n").encode())
        await w.proc.stdin.drain()
        answer = await asyncio.wait_for(fut, timeout)
        if "error" in answer:
            raise RuntimeError(f"worker {w.index}: {answer['error']}")
        return answer

    async def ask_all(self, timeout: float = 120.0, **req: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.ask(w, timeout, **req) for w in self.procs)))

    async def start(self, clusters: list[str] | None = None) -> None:
        if clusters is None:
            await self.ask_all(op="start")
            return
        for w in self.procs:
            mine = [c for c in clusters if c in w.clusters]
            if mine:
                await self.ask(w, op="start", clusters=mine)

    async def kill(self, clusters: list[str]) -> dict[str, float]:
        beats: dict[str, float] = {}
        for w in self.procs:
            mine = [c for c in clusters if c in w.clusters]
            if mine:
                beats.update((await self.ask(w, op="kill", clusters=mine))["last_beat"])
        return beats

    async def gate(self, open_: bool) -> None:
        await self.ask_all(op="gate", open=open_)

    async def stats(self, since: float = 0.0) -> dict[str, Any]:
        parts = await self.ask_all(op="stats", since=since)
        total: dict[str, Any] = {"workers_rss": [p["rss"] for p in parts]}
        for key in ("agents", "live", "connected", "applied", "declarations", "bound", "reconnected", "inventoried"):
            total[key] = sum(p[key] for p in parts)
        for key in ("reconnected_last", "inventoried_last"):
            total[key] = max(p[key] for p in parts)
        return total

    async def times(self, since: float) -> dict[str, list[float]]:
        """Every live agent's seconds after ``since`` of its last reconnect, hello and inventory, merged."""
        merged: dict[str, list[float]] = {}
        for part in await self.ask_all(op="times", since=since):
            for what, values in part.items():
                if what != "id":
                    merged.setdefault(what, []).extend(values)
        return merged

    async def silences(self, marks: dict[str, float], since: float) -> dict[str, float]:
        """For each cluster marked offline at ``marks[cluster]``, how long its agent had sent no heartbeat then."""
        out: dict[str, float] = {}
        for w in self.procs:
            mine = {c: at for c, at in marks.items() if c in w.clusters}
            if mine:
                out.update((await self.ask(w, op="silences", marks=mine, since=since))["silences"])
        return out

    async def steps(self, *, clear: bool = False) -> dict[str, list[float]]:
        """Every worker's connect-path step durations (``tests.bench.steps``), merged; ``clear``: then forgotten."""
        merged: dict[str, list[float]] = {}
        for part in await self.ask_all(op="steps", clear=clear):
            for step, values in part["steps"].items():
                merged.setdefault(step, []).extend(values)
        return merged

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self.procs]

    async def wait_up(self, clusters: list[str] | set[str], timeout: float) -> float:
        """Until every one of ``clusters`` reported up; the time the last one did."""
        deadline = time.monotonic() + timeout
        want = set(clusters)
        while not want <= set(self.up):
            if time.monotonic() > deadline:
                missing = want - set(self.up)
                sample = {c: self.failed.get(c, "?") for c in list(missing)[:5]}
                raise AssertionError(f"{len(missing)} agents not up after {timeout:g}s (e.g. {sample})")
            await asyncio.sleep(0.1)
        return max(self.up[c] for c in want)

    async def stop(self) -> None:
        """Stop every agent in order, then the workers; kill what does not stop."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ask_all(timeout=60, op="stop"), 90)
        for w in self.procs:
            try:
                await asyncio.wait_for(w.proc.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.send_signal(signal.SIGKILL)
                await w.proc.wait()
            if w.reader is not None:
                w.reader.cancel()
        self.procs.clear()

    def kill9(self) -> None:
        for w in self.procs:
            with contextlib.suppress(ProcessLookupError):
                w.proc.send_signal(signal.SIGKILL)
