"""A bench run's timeline (``python -m tests.bench --timeline DIR``): what every process and the machine did,
every 50 ms, beside each fixed-rate window's commands, to name what the slowest commands waited on.

Phase 3's p99 over a 20 s window is set by its slowest ~1 %, and those are usually sent within the same few
tenths of a second with every hop slow at once: one stall per window. The candidates are nats-server's Go
garbage collection, the disk's fsyncs, the hypervisor taking the cores (steal), and bursts of periodic work in
our processes. So the sampler (a process of its own: it keeps sampling while the bench's loop is stalled, and
costs ~1 % of a core) records, every ``interval``:

- CPU time of each process group (nats-server, each service, the agents' workers, the bench, the same-writes
  baseline's processes): ``/proc/<pid>/stat``;
- nats-server's threads running or in uninterruptible sleep (a thread in ``D`` waits on the disk), and its
  write system calls and bytes (``/proc/<pid>/io``);
- the store's disk: writes and flushes completed, the milliseconds spent on them, requests in flight
  (``/proc/diskstats``: a flush is an fsync reaching the device);
- the machine: user, system, iowait, steal, idle (``/proc/stat``) and the pressure stall totals
  (``/proc/pressure``);

and the bench writes each fixed window's commands (send time, round trip, and the platform's own clocks:
decided, published, applied, folded) and keeps nats-server's log with ``GODEBUG=gctrace=1`` (each collection with
its start and its mark's wall time). ``python -m tests.bench.timeline show DIR`` prints, per window, its
collections and disk and steal figures, and around each burst of slow commands a table of 50 ms rows.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

INTERVAL = 0.05
TICK_NS = 1e9 / os.sysconf("SC_CLK_TCK")
SAMPLES = "samples.jsonl"
WINDOWS = "windows.jsonl"
PIDS = "pids.json"
NATS_LOG = "nats.log"


class Timeline:
    """The bench's side: the sampler process, the process groups it samples, the windows' commands."""

    def __init__(self, root: Path, store_dir: Path, interval: float = INTERVAL) -> None:
        root.mkdir(parents=True, exist_ok=True)
        for name in (SAMPLES, WINDOWS, PIDS, NATS_LOG, "stop"):
            with contextlib.suppress(FileNotFoundError):
                (root / name).unlink()
        self.root = root
        self.groups: dict[str, list[int]] = {}
        self.set_pids({})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.bench.timeline", "sample", str(root), str(store_dir), str(interval)],
            start_new_session=True,
        )

    def set_pids(self, groups: dict[str, list[int]]) -> None:
        """The process groups to sample from now on (the sampler reads the file again every second)."""
        self.groups = {k: list(v) for k, v in groups.items()}
        tmp = self.root / (PIDS + ".tmp")
        tmp.write_text(json.dumps(self.groups))
        tmp.replace(self.root / PIDS)

    def window(self, label: str, rate: float, commands: list[dict[str, float]]) -> None:
        """One fixed-rate window: each command's ``sent`` and ``rt`` (seconds, wall clock) and what else was
        stamped (``api``, ``decided``, ``stored``, ``applied``, ``folded``: wall times)."""
        with open(self.root / WINDOWS, "a") as out:
            out.write(json.dumps({"label": label, "rate": rate, "commands": commands}) + "\n")

    def close(self, nats_log: Path | None) -> None:
        (self.root / "stop").touch()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if nats_log is not None and nats_log.exists():
            shutil.copyfile(nats_log, self.root / NATS_LOG)


# --- the sampler ---------------------------------------------------------------------------------------------


def _disk_of(path: Path) -> str:
    """The /proc/diskstats name of the device holding ``path`` (its whole disk when it is a partition)."""
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    for line in Path("/proc/diskstats").read_text().splitlines():
        p = line.split()
        if int(p[0]) == major and int(p[1]) == minor:
            return p[2]
    return ""


def _disk(name: str) -> list[int]:
    """writes completed, ms writing, in flight, ms doing I/O, flushes completed, ms flushing, discards
    completed, ms discarding (a file system mounted with ``discard`` trims freed blocks at its commits)."""
    for line in Path("/proc/diskstats").read_text().splitlines():
        p = line.split()
        if p[2] == name:
            more = [int(p[18]), int(p[19]), int(p[14]), int(p[17])] if len(p) >= 20 else [0, 0, 0, 0]
            return [int(p[7]), int(p[10]), int(p[11]), int(p[12]), *more]
    return [0] * 8


def _cpu_ns(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as f:
        parts = f.read().rsplit(b")", 1)[1].split()
    return int((int(parts[11]) + int(parts[12])) * TICK_NS)


def _threads(pid: int) -> dict[str, int]:
    """nats-server's threads by state: R (running or runnable) and D (uninterruptible: the disk)."""
    out = {"R": 0, "D": 0}
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                state = f.read().rsplit(b")", 1)[1].split()[0].decode()
                if state in out:
                    out[state] += 1
    return out


def _io(pid: int) -> list[int]:
    """Write system calls and bytes written to storage."""
    fields = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return [int(fields["syscw"]), int(fields["write_bytes"])]


def _machine() -> list[int]:
    """user+nice, system+irq+softirq, idle, iowait, steal (clock ticks)."""
    with open("/proc/stat") as f:
        p = [int(x) for x in f.readline().split()[1:9]]
    return [p[0] + p[1], p[2] + p[5] + p[6], p[3], p[4], p[7]]


def _pressure() -> list[int]:
    """Pressure stall totals (us): cpu some, io some, io full."""
    out = []
    for name, kinds in (("cpu", ("some",)), ("io", ("some", "full"))):
        try:
            lines = {ln.split()[0]: ln for ln in Path(f"/proc/pressure/{name}").read_text().splitlines()}
        except OSError:
            out += [0] * len(kinds)
            continue
        out += [int(lines[k].rsplit("total=", 1)[1]) if k in lines else 0 for k in kinds]
    return out


def sample(root: Path, store_dir: Path, interval: float) -> None:
    disk = _disk_of(store_dir)
    parent = os.getppid()
    groups: dict[str, list[int]] = {}
    pids_mtime = 0.0
    with open(root / SAMPLES, "a") as out:
        out.write(json.dumps({"disk": disk, "interval": interval, "tick_ns": TICK_NS}) + "\n")
        next_at = time.monotonic()
        while not (root / "stop").exists() and os.getppid() == parent:
            with contextlib.suppress(OSError, ValueError):
                mtime = (root / PIDS).stat().st_mtime
                if mtime != pids_mtime:
                    groups, pids_mtime = json.loads((root / PIDS).read_text()), mtime
            row: dict[str, Any] = {"t": round(time.time(), 4)}
            cpu = {}
            for name, pids in groups.items():
                total = 0
                for pid in pids:
                    with contextlib.suppress(OSError, IndexError):
                        total += _cpu_ns(pid)
                cpu[name] = total
            row["cpu"] = cpu
            nats = groups.get("nats", [])
            if nats:
                with contextlib.suppress(OSError, KeyError, ValueError):
                    row["nats_io"] = _io(nats[0])
                row["nats_threads"] = _threads(nats[0])
            row["disk"] = _disk(disk) if disk else []
            row["machine"] = _machine()
            row["psi"] = _pressure()
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
            next_at += interval
            pause = next_at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            else:
                next_at = time.monotonic()  # behind (the sampler was not scheduled): no catching up in a burst


# --- reading a timeline ----------------------------------------------------------------------------------------


@dataclass
class Mark:
    """One nats-server collection: its start (wall clock) and the wall time of its phases."""

    gc: int
    start: float
    ms: float
    heap: str

    @property
    def end(self) -> float:
        return self.start + self.ms / 1e3


GCTRACE = re.compile(
    r"gc (\d+) @([\d.]+)s [\d.]+%: ([\d.]+)\+([\d.]+)\+([\d.]+) ms clock.*?(\d+->\d+->\d+) MB, (\d+) MB goal"
)
LOGTIME = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+)")


def gc_marks(log: Path) -> list[Mark]:
    """The collections in nats-server's log; its first timestamped line is taken as the process's start (the
    gctrace's ``@`` is seconds since then; the first line comes a few ms after)."""
    start = None
    marks = []
    if not log.exists():
        return []
    for line in log.read_text(errors="replace").splitlines():
        m = LOGTIME.search(line)
        if m and start is None:
            at = datetime.datetime.strptime(m.group(1), "%Y/%m/%d %H:%M:%S.%f")
            start = at.replace(tzinfo=datetime.UTC).timestamp()
        g = GCTRACE.search(line)
        if g and start is not None:
            ms = float(g.group(3)) + float(g.group(4)) + float(g.group(5))
            marks.append(Mark(int(g.group(1)), start + float(g.group(2)), ms, f"{g.group(6)} MB (goal {g.group(7)})"))
    return marks


@dataclass
class Samples:
    rows: list[dict[str, Any]] = field(default_factory=list)
    tick_ns: float = TICK_NS

    @classmethod
    def load(cls, path: Path) -> Samples:
        s = cls()
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if "t" in row:
                s.rows.append(row)
            else:
                s.tick_ns = row.get("tick_ns", TICK_NS)
        return s

    def between(self, t0: float, t1: float) -> list[dict[str, Any]]:
        return [r for r in self.rows if t0 <= r["t"] <= t1]


def _delta(a: list[int] | None, b: list[int] | None) -> list[int]:
    if not a or not b or len(a) != len(b):
        return []
    return [y - x for x, y in zip(a, b, strict=True)]


def _fmt_time(t: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}"


def bins(samples: Samples, t0: float, t1: float, width: float) -> Iterator[tuple[float, dict[str, float]]]:
    """Per ``width`` from t0 to t1: CPU ms per group, the machine's steal/iowait/idle ms, disk writes and
    flushes with their mean ms, most requests in flight, most nats-server threads in D and in R."""
    rows = samples.between(t0 - width, t1 + width)
    tick_ms = samples.tick_ns / 1e6
    t = t0
    while t < t1:
        inside = [r for r in rows if t <= r["t"] < t + width]
        before = [r for r in rows if r["t"] < t]
        if not inside or not before:
            t += width
            continue
        a, b = before[-1], inside[-1]
        out: dict[str, float] = {}
        for name, ns in b["cpu"].items():
            if name in a["cpu"]:
                out[name] = (ns - a["cpu"][name]) / 1e6
        m = _delta(a.get("machine"), b.get("machine"))
        if m:
            out["idle"], out["iowait"], out["steal"] = m[2] * tick_ms, m[3] * tick_ms, m[4] * tick_ms
            out["busy"] = (m[0] + m[1]) * tick_ms
            # The machine's busy time that none of the sampled processes used: other processes on the same
            # cores (another lane's build or test, the sampler itself, the kernel's own threads).
            out["others"] = max(0.0, (m[0] + m[1]) * tick_ms - sum(v for k, v in out.items() if k in b["cpu"]))
        d = _delta(a.get("disk"), b.get("disk"))
        if d:
            out["writes"], out["flushes"] = d[0], d[4]
            out["w_ms"] = d[1] / d[0] if d[0] else 0.0
            out["f_ms"] = d[5] / d[4] if d[4] else 0.0
            out["inflight"] = max(r["disk"][2] for r in inside if r.get("disk"))
            if len(d) >= 8:
                out["discards"], out["d_ms"] = d[6], d[7]
        io = _delta(a.get("nats_io"), b.get("nats_io"))
        if io:
            out["syscw"] = io[0]
        out["nD"] = max(r.get("nats_threads", {}).get("D", 0) for r in inside)
        out["nR"] = max(r.get("nats_threads", {}).get("R", 0) for r in inside)
        psi = _delta(a.get("psi"), b.get("psi"))
        if psi:
            out["psi_cpu"], out["psi_io"] = psi[0] / 1e3, psi[1] / 1e3
        yield t, out
        t += width


def window_p99(commands: list[dict[str, float]]) -> float:
    """The commands' p99 round trip (0 for none), as every line of ``show`` counts it."""
    rts = sorted(c["rt"] for c in commands)
    return rts[min(len(rts) - 1, int(len(rts) * 0.99))] if rts else 0.0


def slow_bursts(commands: list[dict[str, float]], gap: float = 0.5) -> tuple[float, list[list[dict[str, float]]]]:
    """The window's p99 and its commands at or above it, grouped into bursts of sends ``gap`` s apart."""
    if not commands:
        return 0.0, []
    p99 = window_p99(commands)
    slow = sorted((c for c in commands if c["rt"] >= p99), key=lambda c: c["sent"])
    bursts: list[list[dict[str, float]]] = []
    for c in slow:
        if bursts and c["sent"] - bursts[-1][-1]["sent"] <= gap:
            bursts[-1].append(c)
        else:
            bursts.append([c])
    return p99, bursts


COLUMNS = (
    "nats",
    "lifecycle",
    "api",
    "health",
    "registry",
    "access",
    "agents",
    "bench",
    "sw-lifecycle",
    "sw-agents",
    "others",
    "steal",
    "iowait",
    "idle",
    "flushes",
    "f_ms",
    "discards",
    "d_ms",
    "w_ms",
    "inflight",
    "syscw",
    "nD",
    "nR",
    "psi_cpu",
    "psi_io",
)


def render_burst(
    samples: Samples,
    marks: list[Mark],
    commands: list[dict[str, float]],
    burst: list[dict[str, float]],
    before: float,
    after: float,
    width: float,
) -> list[str]:
    first, last = burst[0]["sent"], burst[-1]["sent"]
    t0, t1 = first - before, last + after
    rows = list(bins(samples, t0, t1, width))
    cols = [c for c in COLUMNS if any(c in r for _, r in rows)]
    lines = [
        f"  burst of {len(burst)} sent {_fmt_time(first)}-{_fmt_time(last)}; round trips "
        f"{min(c['rt'] for c in burst) * 1e3:.0f}-{max(c['rt'] for c in burst) * 1e3:.0f} ms; " + _stalled_span(burst),
        "    time           sent  rt_ms " + " ".join(f"{c[:7]:>7}" for c in cols) + "  gc",
    ]
    for t, r in rows:
        sent = [c for c in commands if t <= c["sent"] < t + width]
        rt = max((c["rt"] for c in sent), default=0.0) * 1e3
        gc = [m for m in marks if m.start < t + width and m.end > t]
        gc_text = " ".join(f"gc{m.gc}({m.ms:.0f}ms)" for m in gc)
        lines.append(
            f"    {_fmt_time(t)} {len(sent):4d} {rt:6.0f} "
            + " ".join(f"{r.get(c, 0.0):7.1f}" for c in cols)
            + f"  {gc_text}"
        )
    return lines


def _stalled_span(burst: list[dict[str, float]]) -> str:
    """When the slow commands' stamps say they were held: the latest first stamp after their send and the
    earliest stamp that came late, i.e. where each hop's clock read."""
    parts = []
    for stamp in ("decided", "published", "api", "applied", "folded"):
        got = [c[stamp] - c["sent"] for c in burst if c.get(stamp)]
        if got:
            parts.append(f"{stamp} +{min(got) * 1e3:.0f}..{max(got) * 1e3:.0f}")
    return "stamps (ms after send): " + ", ".join(parts) if parts else ""


def split_by_collections(
    commands: list[dict[str, float]], marks: list[Mark]
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """(clear, overlapping): the commands whose flight (send to result) met none of nats-server's collections'
    marks, and those in flight during one. A mark takes one of the two cores for its whole wall time, so the
    second list's tail is the collector's, the first's the chain's."""
    clear, overlapping = [], []
    for c in commands:
        hit = any(c["sent"] <= m.end and c["sent"] + c["rt"] >= m.start for m in marks)
        (overlapping if hit else clear).append(c)
    return clear, overlapping


def _p99_line(clear: list[dict[str, float]], overlapping: list[dict[str, float]]) -> str:
    def p99(cs: list[dict[str, float]]) -> str:
        return f"{window_p99(cs) * 1e3:.1f} ms" if cs else "n/a"

    return (
        f"  p99 clear of collections {p99(clear)} ({len(clear)} commands); "
        f"in flight during one {p99(overlapping)} ({len(overlapping)})"
    )


def load_line(r: dict[str, float], groups: Iterable[str], seconds: float, commands: int) -> str:
    """A window's load from its one whole-window bin ``r``: how busy the machine was and how long some task
    waited for a core (CPU pressure), each group's cores and CPU ms per command. At a fixed rate well under the
    maximum, CPU per command is higher than at the maximum (each message its own wake-up, nothing batched),
    and a busy machine's run queue is what every hop of the slowest commands waits in."""
    cores = r.get("busy", 0) + r.get("idle", 0) + r.get("iowait", 0)  # the machine's CPU ms in the window
    busy = 100 * r.get("busy", 0) / cores if cores else 0.0
    pressure = 100 * r.get("psi_cpu", 0) / (seconds * 1e3) if seconds else 0.0
    used = sorted(((g, r[g]) for g in groups if r.get(g, 0) > 0), key=lambda x: -x[1])
    return (
        f"  load: machine busy {busy:.0f} %, CPU pressure {pressure:.0f} %; cores (CPU ms per command): "
        + ", ".join(f"{g} {ms / (seconds * 1e3):.2f} ({ms / commands:.2f})" for g, ms in used if commands)
    )


def window_summary(samples: Samples, marks: list[Mark], window: dict[str, Any]) -> list[str]:
    cmds = window["commands"]
    t0 = min(c["sent"] for c in cmds)
    t1 = max(c["sent"] + c["rt"] for c in cmds)
    p99, bursts = slow_bursts(cmds)
    inside = [m for m in marks if m.end > t0 and m.start < t1]
    lines = [
        f"{window['label']} at {window['rate']:g}/s, {len(cmds)} commands from {_fmt_time(t0)}: p99 "
        f"{p99 * 1e3:.1f} ms, {len(bursts)} burst(s) of slow sends",
        "  nats-server collections: "
        + (", ".join(f"gc{m.gc} at +{m.start - t0:.2f}s {m.ms:.0f} ms" for m in inside) or "none"),
        _p99_line(*split_by_collections(cmds, inside)),
    ]
    total = list(bins(samples, t0, t1, t1 - t0))
    if total:
        r = total[0][1]
        lines.append(
            "  whole window: "
            + ", ".join(f"{k} {r[k]:.0f}" for k in ("others", "steal", "iowait", "idle", "flushes", "writes") if k in r)
            + (f"; flush mean {r['f_ms']:.2f} ms" if "f_ms" in r else "")
        )
        groups = {g for row in samples.between(t0, t1) for g in row.get("cpu", {})}
        lines.append(load_line(r, groups, t1 - t0, len(cmds)))
    worst = sorted(bins(samples, t0, t1, 0.05), key=lambda x: -x[1].get("f_ms", 0.0))[:3]
    if worst:
        lines.append(
            "  slowest flushes (50 ms bins): "
            + ", ".join(f"+{t - t0:.2f}s {r.get('f_ms', 0):.1f} ms x{r.get('flushes', 0):.0f}" for t, r in worst)
        )
    for burst in bursts:
        first = burst[0]["sent"]
        near = [m for m in marks if m.end > first - 1.0 and m.start < burst[-1]["sent"] + 0.5]
        lines.append(
            f"  burst at +{first - t0:.2f}s ({len(burst)}): "
            + (", ".join(f"gc{m.gc} {m.start - first:+.2f}..{m.end - first:+.2f}s" for m in near) or "no collection")
        )
    return lines


def per_second(samples: Samples, window: dict[str, Any]) -> list[str]:
    """Each second of the window: its slowest command (send time, round trip, the second's median) beside the
    50 ms bin of that second in which nats-server made the fewest write calls (a stall of its own shows as
    both at the same moment, second after second)."""
    cmds = window["commands"]
    t0, t1 = min(c["sent"] for c in cmds), max(c["sent"] for c in cmds)
    rows = [(t, r) for t, r in bins(samples, t0, t1, 0.05) if "syscw" in r]
    lines = []
    for sec in range(int(t0), int(t1) + 1):
        these = sorted((c for c in cmds if sec <= c["sent"] < sec + 1), key=lambda c: c["rt"])
        if not these:
            continue
        worst, median = these[-1], these[len(these) // 2]["rt"]
        low = min(((t, r) for t, r in rows if sec <= t < sec + 1), key=lambda x: x[1]["syscw"], default=None)
        fewest = f"; fewest nats writes {_fmt_time(low[0])} ({low[1]['syscw']:.0f})" if low else ""
        lines.append(
            f"  {_fmt_time(worst['sent'])} slowest {worst['rt'] * 1e3:6.1f} ms (median {median * 1e3:5.1f}){fewest}"
        )
    return lines


def show(
    root: Path, before: float, after: float, width: float, labels: Iterable[str] = (), seconds: bool = False
) -> None:
    samples = Samples.load(root / SAMPLES)
    marks = gc_marks(root / NATS_LOG)
    wanted = set(labels)
    for line in (root / WINDOWS).read_text().splitlines():
        window = json.loads(line)
        if wanted and window["label"] not in wanted:
            continue
        if not window["commands"]:
            continue
        for text in window_summary(samples, marks, window):
            print(text)
        if seconds:
            for text in per_second(samples, window):
                print(text)
        _, bursts = slow_bursts(window["commands"])
        for burst in bursts:
            for text in render_burst(samples, marks, window["commands"], burst, before, after, width):
                print(text)
        print()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.bench.timeline")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="(the bench starts this) sample until DIR/stop exists")
    s.add_argument("dir", type=Path)
    s.add_argument("store", type=Path)
    s.add_argument("interval", type=float)
    v = sub.add_parser("show", help="each window's slow bursts beside the samples and collections")
    v.add_argument("dir", type=Path)
    v.add_argument("--before", type=float, default=1.0, help="seconds shown before a burst's first send")
    v.add_argument("--after", type=float, default=0.6, help="seconds shown after its last send")
    v.add_argument("--bin", type=float, default=0.05, help="row width (s)")
    v.add_argument("--window", action="append", default=[], help="only this window (label; repeatable)")
    v.add_argument("--per-second", action="store_true", help="each second's slowest command and fewest writes")
    args = p.parse_args(argv)
    if args.cmd == "sample":
        sample(args.dir, args.store, args.interval)
    else:
        show(args.dir, args.before, args.after, args.bin, args.window, args.per_second)


if __name__ == "__main__":
    main()
