"""nats-server's own CPU split by what it was doing (``--nats-profile DIR``): Go CPU profiles taken from its
profiler (``prof_port``) in five-second slices while a phase runs, and each activity's share of them.

The connect's and the restart's time is CPU: the fleet's, ours and nats-server's. Whether nats-server's part is
what the platform asks of it (messages, writes, consumers) or its own cost of what the design needs (checking
each connection's JWT, fsyncing a write) decides what is left to cut, and only its own profile says which.

Each sample is given to the first activity found walking its stack from the leaf up, so a collection's work
inside a write is counted as the collection's, and a write's system calls as the write's. Reading a profile
needs the Go toolchain (``go tool pprof``), found as the kube binaries' builds find it (``GO``, ``PATH``,
``/usr/local/go/bin/go``); without it the profiles are kept and the split is not printed.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import httpx

SLICE_SECONDS = 5
"""Seconds per profile: a phase is cut into slices, and only the slices that ended before the phase did are
kept, so no profile reaches past the phase it stands for by more than one slice."""

ACTIVITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "garbage collection",
        ("runtime.gcBgMarkWorker", "runtime.gcAssistAlloc", "runtime.bgsweep", "runtime.bgscavenge"),
    ),
    ("authentication (JWT and nonce checks)", ("server.(*client).processConnect",)),
    (
        "connections accepted and closed (and their system events)",
        (
            "server.(*Server).acceptConnections",
            "server.(*Server).saveClosedClient",
            "server.(*client).closeConnection",
            "server.(*Server).internalSendLoop",
        ),
    ),
    (
        "JetStream stores (fsynced writes)",
        ("server.(*msgBlock).", "server.(*fileStore).", "server.(*stream).internalLoop"),
    ),
    ("JetStream API (consumer and stream requests)", ("server.(*Server).js", "server.(*stream).addConsumer")),
    ("consumers (pulls, deliveries, acks)", ("server.(*consumer).",)),
    (
        "messages in (parsing, routing)",
        ("server.(*client).processInbound", "server.(*client).processSub", "server.(*client).parse"),
    ),
    ("messages out (socket writes)", ("server.(*client).writeLoop", "server.(*client).flushOutbound")),
    ("socket reads", ("server.(*client).readLoop",)),
    ("Go scheduler (wake-ups, polling)", ("runtime.findRunnable", "runtime.schedule", "runtime.mcall")),
)
"""Activities by the functions that mark them (a substring of a frame's name)."""

OTHER = "other"

_FIRST = re.compile(r"^\s*([0-9.]+)(ns|us|µs|ms|s)\s+(.*\S)\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class Split:
    """CPU seconds of nats-server by activity over some profiles."""

    seconds: dict[str, float]
    """Per activity (``ACTIVITIES``' names and ``OTHER``), only those with samples."""

    @property
    def total(self) -> float:
        return sum(self.seconds.values())

    def line(self) -> str:
        """``"10.1 s of CPU: authentication (...) 31 %, ..."``, largest first."""
        total = self.total or 1.0
        parts = [f"{name} {s / total:.0%}" for name, s in sorted(self.seconds.items(), key=lambda kv: -kv[1])]
        return f"{self.total:.1f} s of CPU: " + ", ".join(parts)


def activity_of(stack: list[str]) -> str:
    """The activity of one sample: the first frame from the leaf up that marks one."""
    for frame in stack:
        for name, marks in ACTIVITIES:
            if any(mark in frame for mark in marks):
                return name
    return OTHER


def split_traces(text: str) -> Split:
    """``go tool pprof -traces`` output as seconds per activity."""
    seconds: dict[str, float] = {}
    stack: list[str] = []
    value = 0.0

    def close() -> None:
        if stack:
            name = activity_of(stack)
            seconds[name] = seconds.get(name, 0.0) + value

    for line in text.splitlines():
        if line.startswith("-----------+"):
            close()
            stack, value = [], 0.0
            continue
        first = _FIRST.match(line) if not stack else None
        if first is not None:
            value = float(first.group(1)) * _UNITS[first.group(2)]
            stack.append(first.group(3))
        elif stack and line.strip():
            stack.append(line.strip())
    close()
    return Split(seconds)


def go_binary() -> str | None:
    """The Go toolchain, found as ``tests/tools/cache.sh`` finds it; None when there is none."""
    found = os.environ.get("GO") or shutil.which("go")
    if found:
        return found
    return "/usr/local/go/bin/go" if os.access("/usr/local/go/bin/go", os.X_OK) else None


def split_files(files: list[Path]) -> Split | None:
    """The activities of ``files`` merged (``go tool pprof`` merges the profiles it is given); None without Go
    or without files."""
    go = go_binary()
    if go is None or not files:
        return None
    out = subprocess.run(
        [go, "tool", "pprof", "-traces", *map(str, files)], capture_output=True, text=True, timeout=120, check=True
    )
    return split_traces(out.stdout)


@dataclass
class Slices:
    """nats-server's CPU profiles, one slice after the other, until cancelled: ``DIR/<label>-NN.pprof``."""

    port: int
    directory: Path
    label: str
    files: list[Path] = field(default_factory=list)
    failures: int = 0
    """Slices not taken (the profiler not answering, e.g. nats-server busy starting)."""
    split: Split | None = None
    """The activities of the slices taken, once ``report`` has read them."""

    async def run(self) -> None:
        """Take slices until cancelled; the slice under way when cancelled is not kept (it reaches past the
        phase)."""
        async with httpx.AsyncClient(timeout=SLICE_SECONDS + 30) as http:
            while True:
                if not await self._take(http):
                    await asyncio.sleep(0.5)  # a retry's pause: the profiler refused or is not up yet

    async def once(self) -> None:
        """One slice (a window of ``SLICE_SECONDS`` that starts now)."""
        async with httpx.AsyncClient(timeout=SLICE_SECONDS + 30) as http:
            await self._take(http)

    async def _take(self, http: httpx.AsyncClient) -> bool:
        try:
            resp = await http.get(
                f"http://127.0.0.1:{self.port}/debug/pprof/profile", params={"seconds": SLICE_SECONDS}
            )
            resp.raise_for_status()
        except httpx.HTTPError:
            self.failures += 1
            return False
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{self.label}-{len(self.files):02d}.pprof"
        path.write_bytes(resp.content)
        self.files.append(path)
        return True

    async def report(self, what: str) -> list[str]:
        """What the slices say, for the printout: nats-server's CPU ``what`` by activity (also ``self.split``)."""
        where = f"{len(self.files)} profiles of {SLICE_SECONDS} s in {self.directory}"
        if not self.files:
            return [f"nats-server's CPU {what}: no profile taken ({self.failures} refused)"]
        try:
            self.split = split = await asyncio.to_thread(split_files, self.files)
        except (OSError, subprocess.SubprocessError) as exc:
            # A diagnostic that cannot be read must not end the run whose figures it sits beside.
            return [f"nats-server's CPU {what}: {where} (go tool pprof failed: {exc})"]
        if split is None:
            return [f"nats-server's CPU {what}: {where} (no Go toolchain here to read them: go tool pprof)"]
        return [f"nats-server's CPU {what} ({where}): {split.line()}"]
