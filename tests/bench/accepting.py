"""How nats-server takes a reconnect storm: sampled while it lasts, printed after.

For each sample: the connections open (``/varz`` ``connections``), the connections accepted since the server
started (``total_connections``: more than are open means clients gave up on handshakes and dialled again),
and the kernel's accept queue of the client port (connections the kernel completed that nats-server has not
accepted yet: ``/proc/net/tcp``'s receive queue of the listening socket). A service whose connect times out
in the storm waits in one of these. Beside them, the JetStream API requests the server has taken and those
still in flight (``/varz`` ``jetstream.stats.api``): when JetStream starts answering (the services' start, the
consumers made again for the agents' hellos) and whether its API queue, not the askers, is what waits."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.bench.traffic import monitor_json

LISTEN = "0A"
"""The TCP state of a listening socket in ``/proc/net/tcp``."""


@dataclass(frozen=True)
class Sample:
    at: float
    """Seconds since the server was started."""
    open: int
    accepted: int
    queued: int
    """The accept queue of the client port; -1 when not found."""
    api_total: int = 0
    """JetStream API requests the server took since it started."""
    api_inflight: int = 0
    """JetStream API requests taken and not yet answered (queued for its API workers, or in one)."""


def accept_queue(port: int, tables: tuple[str, ...] = ("/proc/net/tcp", "/proc/net/tcp6")) -> int:
    """Connections waiting in the kernel for nats-server to accept them on ``port`` (-1: no such listener)."""
    wanted = f"{port:04X}"
    found = -1
    for table in tables:
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 5 or fields[3] != LISTEN or fields[1].rsplit(":", 1)[-1] != wanted:
                    continue
                found = max(found, 0) + int(fields[4].split(":")[1], 16)
    return found


def from_varz(at: float, varz: dict[str, Any], queued: int) -> Sample:
    """A sample from nats-server's ``/varz`` (no JetStream section: no API figures)."""
    api = ((varz.get("jetstream") or {}).get("stats") or {}).get("api") or {}
    return Sample(
        at,
        int(varz.get("connections", 0)),
        int(varz.get("total_connections", 0)),
        queued,
        int(api.get("total", 0)),
        int(api.get("inflight", 0)),
    )


async def sample(monitor_port: int, client_port: int, started: float, every: float, out: list[Sample]) -> None:
    """Append a sample to ``out`` every ``every`` seconds until cancelled."""
    while True:
        queued = accept_queue(client_port)
        try:
            varz = await asyncio.to_thread(monitor_json, monitor_port, "/varz", 5.0)
        except Exception:  # the server busy or not up yet: a gap in the samples, not an end
            varz = {}
        if varz:
            out.append(from_varz(time.time() - started, varz, queued))
        await asyncio.sleep(every)


def lines(samples: list[Sample], expected: int, step: float = 2.0) -> list[str]:
    """One line per ``step`` seconds of samples, then what the storm cost in handshakes."""
    out: list[str] = []
    next_at = 0.0
    for s in samples:
        if s.at >= next_at:
            out.append(
                f"  at {s.at:5.1f}s: {s.open} open, {s.accepted} accepted, {s.queued} in the accept queue; "
                f"JetStream API requests {s.api_total} taken, {s.api_inflight} in flight"
            )
            next_at = s.at + step
    if samples:
        last = samples[-1]
        wasted = max(last.accepted - last.open, 0)
        out.append(
            f"connections accepted since NATS started: {last.accepted} for {last.open} open "
            f"({wasted} given up on, {wasted / max(expected, 1):.2f} per agent); "
            f"accept queue at most {max(s.queued for s in samples)}"
        )
    return out
