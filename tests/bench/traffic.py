"""Where a command's messages and writes go: per process, from nats-server's own counters.

Messages: each connection's ``in_msgs`` (what it published: requests, replies, stream and KV writes) and
``out_msgs`` (what the server delivered to it) from the monitoring port's ``/connz``, summed by process
(a service's connection is named ``tether-<service>``, an agent's ``tether-agent-<cluster>``). Writes: each
stream's last sequence from ``/jsz`` (a KV bucket is the stream ``KV_<bucket>``), and who wrote them: a
subscription on every stream's subjects sees each write with its reply subject, the writer's own inbox,
which ``/connz?subs=1`` maps back to its connection. Each window is measured beside an idle window of the
same length (heartbeats, flushes, pings), which is subtracted.

The subtraction is only as good as the idle window is typical: a fleet that connected within a few seconds
sends its periodic inventories (every 2 minutes) within a few seconds too, and that burst (inventories in
EVT, lifecycle's activity writes in KV) landing in the idle window and not the busy one wiped the KV and EVT
writes out of one run's counts (clamped at 0). So the writes are also counted exactly: each write whose
subject (or, for a public event, its payload) names one of the measured commands' objects (``Attribute``),
with nothing subtracted.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import nats.aio.client

from schemas import subjects
from schemas.messages import WorkloadRef, desired_key, workload_key

SERVICE_NAMES = ("registry", "access", "lifecycle", "health", "api")
MAX_CONNECTIONS = 100_000


def process_of(connection_name: str) -> str:
    """The process a connection belongs to, by the name it connected with."""
    if connection_name.startswith("tether-agent"):
        return "agents"
    for service in SERVICE_NAMES:
        if connection_name.startswith(f"tether-{service}"):
            return service
    return "bench"


def monitor_json(port: int, path: str, timeout: float = 30.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return dict(json.loads(resp.read()))


@dataclass
class Snapshot:
    at: float
    connections: dict[int, tuple[str, int, int]]
    """cid -> (process, in_msgs, out_msgs)"""
    streams: dict[str, int]
    """stream -> last sequence"""
    server_in: int
    server_out: int
    js_api: int = 0
    """JetStream API requests served so far (``/jsz`` ``api.total``)."""


DESIRED_STREAMS = "KV_tether-desired-*"
"""The desired state's buckets, counted as one (``stream_group``)."""


def stream_group(stream: str) -> str:
    """The name a stream's writes are counted under: the desired state's buckets together."""
    return DESIRED_STREAMS if stream in subjects.DESIRED_STREAMS else stream


def snapshot(port: int) -> Snapshot:
    connz = monitor_json(port, f"/connz?limit={MAX_CONNECTIONS}")
    conns = {
        int(c["cid"]): (process_of(str(c.get("name", ""))), int(c.get("in_msgs", 0)), int(c.get("out_msgs", 0)))
        for c in connz.get("connections", [])
    }
    jsz = monitor_json(port, "/jsz?accounts=true&streams=true")
    streams: dict[str, int] = {}
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            name = stream_group(str(stream["name"]))
            streams[name] = streams.get(name, 0) + int(stream.get("state", {}).get("last_seq", 0))
    varz = monitor_json(port, "/varz")
    return Snapshot(
        time.monotonic(),
        conns,
        streams,
        int(varz.get("in_msgs", 0)),
        int(varz.get("out_msgs", 0)),
        int((jsz.get("api") or {}).get("total", 0)),
    )


def stream_subjects(port: int) -> dict[str, list[str]]:
    jsz = monitor_json(port, "/jsz?accounts=true&streams=true&config=true")
    out: dict[str, list[str]] = {}
    for account in jsz.get("account_details", []):
        for stream in account.get("stream_detail", []):
            out[str(stream["name"])] = list((stream.get("config") or {}).get("subjects") or [])
    return out


def inbox_owners(port: int) -> dict[str, str]:
    """``_INBOX.<id>`` (a connection's reply prefix) -> process."""
    connz = monitor_json(port, f"/connz?limit={MAX_CONNECTIONS}&subs=1")
    owners: dict[str, str] = {}
    for c in connz.get("connections", []):
        process = process_of(str(c.get("name", "")))
        for sub in c.get("subscriptions_list") or []:
            if str(sub).startswith("_INBOX"):
                owners[inbox_key(str(sub))] = process
    return owners


def inbox_key(subject: str) -> str:
    return ".".join(subject.split(".")[:2])


@dataclass
class Window:
    seconds: float
    messages: dict[str, tuple[int, int]] = field(default_factory=dict)
    """process -> (published, delivered)"""
    writes: dict[str, int] = field(default_factory=dict)
    """stream -> messages stored"""
    writers: Counter[tuple[str, str]] = field(default_factory=Counter)
    """(process, stream) -> writes seen (a refused CAS write counts here, not in ``writes``)"""
    server: tuple[int, int] = (0, 0)
    js_api: int = 0


def difference(a: Snapshot, b: Snapshot) -> Window:
    window = Window(seconds=b.at - a.at)
    for cid, (process, in_b, out_b) in b.connections.items():
        _, in_a, out_a = a.connections.get(cid, (process, 0, 0))
        pub, dlv = window.messages.get(process, (0, 0))
        window.messages[process] = (pub + in_b - in_a, dlv + out_b - out_a)
    window.writes = {s: seq - a.streams.get(s, 0) for s, seq in b.streams.items() if seq - a.streams.get(s, 0)}
    window.server = (b.server_in - a.server_in, b.server_out - a.server_out)
    window.js_api = b.js_api - a.js_api
    return window


Attribute = Callable[[str, bytes], str | None]
"""The group of the measured work a write (its subject, its payload) belongs to; None when it is not the
work's."""


def of_objects(objects: dict[WorkloadRef, tuple[str, str]]) -> Attribute:
    """The writes a command on one of ``objects`` (ref -> (its cluster, the command's group, e.g. its action))
    makes: its desired-state records (the result is recorded there too: agents ask lifecycle, they write no
    stream), its cluster's command audit records (nothing else on the cluster issues commands meanwhile) and
    the public events naming it."""
    records = {
        f"{subjects.desired_prefix(c)}{desired_key(c, workload_key(ref))}": group for ref, (c, group) in objects.items()
    }
    reports = {subjects.audit_command(c): group for c, group in objects.values()}
    named = {(ref.kind, ref.project, ref.name): group for ref, (_, group) in objects.items()}
    events = subjects.public_event("")

    def attribute(subject: str, data: bytes) -> str | None:
        group = records.get(subject) or reports.get(subject)
        if group is not None or not subject.startswith(events):
            return group
        try:
            event = json.loads(data)
        except ValueError:
            return None
        if not isinstance(event, dict):
            return None
        return named.get((event.get("kind"), event.get("project"), event.get("name")))

    return attribute


class Writers:
    """Counts every stream write by stream and by the writer's process (its reply inbox), and the writes
    ``attribute`` says belong to the measured work, by stream."""

    def __init__(self, port: int, attribute: Attribute | None = None) -> None:
        self.port = port
        self.owners: dict[str, str] = {}
        self.seen: Counter[tuple[str, str]] = Counter()
        self.attributed: Counter[tuple[str, str]] = Counter()
        """(group, stream) -> writes ``attribute`` gives to the work"""
        self.attribute = attribute
        self.subs: list[Any] = []

    async def start(self, nc: nats.aio.client.Client) -> None:
        self.owners = inbox_owners(self.port)
        for stream, patterns in stream_subjects(self.port).items():
            for subject in patterns:
                self.subs.append(await nc.subscribe(subject, cb=self._counter(stream_group(stream))))

    def _counter(self, stream: str) -> Callable[[Any], Awaitable[None]]:
        async def on(msg: Any) -> None:
            writer = self.owners.get(inbox_key(msg.reply), "?") if msg.reply else "no reply"
            self.seen[(writer, stream)] += 1
            group = self.attribute(msg.subject, msg.data) if self.attribute is not None else None
            if group is not None:
                self.attributed[(group, stream)] += 1

        return on

    async def stop(self) -> None:
        for sub in self.subs:
            await sub.unsubscribe()


async def measure(
    port: int,
    nc: nats.aio.client.Client,
    seconds: float,
    work: Callable[[], Awaitable[int]],
    attribute: Attribute | None = None,
    group_sizes: dict[str, int] | None = None,
) -> dict[str, Any]:
    """An idle window of ``seconds``, then ``work()`` (returns the commands it completed); the difference
    per command, and the writes ``attribute`` gives to the work, per command and per command of each group
    (``group_sizes``: how many commands of each group the work issued)."""
    writers = Writers(port, attribute)
    await writers.start(nc)
    await nc.flush()
    try:
        a = snapshot(port)
        await asyncio.sleep(seconds)
        b = snapshot(port)
        idle = difference(a, b)
        idle.writers = Counter(writers.seen)
        writers.seen.clear()
        writers.attributed.clear()
        commands = await work()
        await nc.flush()
        c = snapshot(port)
        busy = difference(b, c)
        busy.writers = Counter(writers.seen)
        attributed = Counter(writers.attributed)
    finally:
        await writers.stop()
    profile = per_command(idle, busy, commands)
    if attribute is not None:
        profile |= attributed_per_command(attributed, commands, group_sizes or {})
    return profile


def attributed_per_command(
    attributed: Counter[tuple[str, str]], commands: int, group_sizes: dict[str, int]
) -> dict[str, Any]:
    """The attributed writes per command by stream, and per command of each group by stream."""
    n = max(commands, 1)
    by_stream: Counter[str] = Counter()
    by_group: dict[str, dict[str, float]] = {}
    for (group, stream), count in sorted(attributed.items()):
        by_stream[stream] += count
        if group_sizes.get(group):
            by_group.setdefault(group, {})[stream] = count / group_sizes[group]
    return {
        "attributed": {s: v / n for s, v in sorted(by_stream.items())},
        "attributed_per_command": sum(by_stream.values()) / n,
        "attributed_by_group": {g: {"commands": group_sizes[g], "writes": w} for g, w in by_group.items()},
    }


def per_command(idle: Window, busy: Window, commands: int) -> dict[str, Any]:
    scale = busy.seconds / max(idle.seconds, 1e-9)
    n = max(commands, 1)

    def net(busy_value: float, idle_value: float) -> float:
        return max(0.0, busy_value - idle_value * scale) / n

    processes = sorted(set(busy.messages) | set(idle.messages))
    messages = {
        p: {
            "published": net(busy.messages.get(p, (0, 0))[0], idle.messages.get(p, (0, 0))[0]),
            "delivered": net(busy.messages.get(p, (0, 0))[1], idle.messages.get(p, (0, 0))[1]),
        }
        for p in processes
    }
    streams = sorted(set(busy.writes) | set(idle.writes))
    writes = {s: net(busy.writes.get(s, 0), idle.writes.get(s, 0)) for s in streams}
    pairs = sorted(set(busy.writers) | set(idle.writers))
    writers: dict[str, dict[str, float]] = {}
    for process, stream in pairs:
        value = net(busy.writers.get((process, stream), 0), idle.writers.get((process, stream), 0))
        if value:
            writers.setdefault(process, {})[stream] = value
    platform = [p for p in processes if p != "bench"]
    return {
        "commands": commands,
        "seconds": busy.seconds,
        "idle_seconds": idle.seconds,
        "messages": messages,
        "messages_per_command": sum(messages[p]["published"] for p in platform),
        "server_in_per_command": net(busy.server[0], idle.server[0]),
        "server_out_per_command": net(busy.server[1], idle.server[1]),
        "writes": {s: v for s, v in writes.items() if v},
        "writes_per_command": sum(writes.values()),
        "js_api_per_command": net(busy.js_api, idle.js_api),
        "writers": writers,
    }


def grouped(writes: dict[str, float]) -> dict[str, float]:
    """The 16 command shards of earlier versions (``CMD_00``...) as one ``CMD_*``."""
    out: dict[str, float] = {}
    for stream, value in writes.items():
        key = "CMD_*" if stream.startswith("CMD_") else stream
        out[key] = out.get(key, 0.0) + value
    return out


def render(
    profile: dict[str, Any], unit: str = "command", note: str = "idle traffic of the same length subtracted"
) -> list[str]:
    """Lines for the report: messages per process, writes per stream and per writer."""
    lines = [
        f"per {unit} ({profile['commands']} {unit}s, {profile['seconds']:.1f}s, {note}): "
        f"{profile['messages_per_command']:.1f} messages published by the platform "
        f"(server: {profile['server_in_per_command']:.1f} in, {profile['server_out_per_command']:.1f} out), "
        f"{profile['writes_per_command']:.2f} stream + KV writes, "
        f"{profile.get('js_api_per_command', 0):.2f} JetStream API requests",
        "  | process | published | delivered | writes (stream: per command) |",
        "  |---|---|---|---|",
    ]
    for process, m in profile["messages"].items():
        mine = grouped(profile["writers"].get(process, {}))
        wrote = ", ".join(f"{s} {v:.2f}" for s, v in sorted(mine.items()))
        lines.append(f"  | {process} | {m['published']:.2f} | {m['delivered']:.2f} | {wrote or '-'} |")
    stored = ", ".join(f"{s} {v:.2f}" for s, v in sorted(grouped(profile["writes"]).items()))
    lines.append(f"  stored per stream: {stored}")
    if "attributed" in profile:
        mine = ", ".join(f"{s} {v:.2f}" for s, v in sorted(grouped(profile["attributed"]).items()))
        lines.append(
            f"  writes naming the {unit}s' objects (counted, nothing subtracted): "
            f"{profile['attributed_per_command']:.2f} per {unit}: {mine or '-'}"
        )
        for group, counted in profile.get("attributed_by_group", {}).items():
            theirs = ", ".join(f"{s} {v:.2f}" for s, v in sorted(grouped(counted["writes"]).items()))
            total = sum(counted["writes"].values())
            lines.append(f"    {group} ({counted['commands']} {unit}s): {total:.2f} per {unit}: {theirs}")
    return lines
