"""Test harness: real nats-server, services and agents as real processes, waits with deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import nats
import nats.aio.client

from schemas.messages import Message
from services.bus import Bucket, identity
from services.bus.records import Latest
from services.platform.environment import PlatformPaths, platform_env, service_env
from services.platform.natsd import NatsServer, NatsServerConfig, free_port
from services.platform.tls import TlsFiles, ensure_tls

T = TypeVar("T")
ROOT = Path(__file__).resolve().parent.parent

# Fast clocks for tests: the same code paths as production, shorter intervals.
FAST_ENV = {
    "TETHER_HEARTBEAT_INTERVAL": "0.5",
    "TETHER_OFFLINE_AFTER": "3.0",
    "TETHER_SWEEP_INTERVAL": "0.2",
    "TETHER_FLUSH_INTERVAL": "0.5",
    "TETHER_SLEEP_CHECK_INTERVAL": "0.3",
    "TETHER_LOG_LEVEL": "INFO",
}


class Abort(Exception):
    """Raised by a check to stop waiting at once (the thing waited for can no longer happen)."""


async def wait_for(
    check: Callable[[], Awaitable[T | None]] | Callable[[], T | None],
    *,
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            result = check()
            if asyncio.iscoroutine(result):
                # A check that hangs must not outlive the deadline.
                result = await asyncio.wait_for(result, max(0.1, deadline - time.monotonic()))
            last = result
            if result:
                return result  # type: ignore[return-value]
        except Abort:
            raise
        except Exception as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def registry_in_process(url: str) -> AsyncIterator[None]:
    """The registry service, run in this process against the NATS at ``url`` for the block (answering when
    the block starts), then stopped."""
    from services.bus.settings import BusSettings, ServiceSettings
    from services.registry.service import Settings, run

    service = asyncio.create_task(run(Settings(common=ServiceSettings(bus=BusSettings(url=url)))), name="registry")
    probe = await nats.connect(url)

    async def answers() -> bool:
        with contextlib.suppress(Exception):
            await probe.request("$SRV.PING.tether-registry", b"", timeout=0.5)
            return True
        return False

    try:
        await wait_for(answers, what="the registry to answer", timeout=20)
        yield
    finally:
        await probe.close()
        service.cancel()
        with contextlib.suppress(BaseException):
            await service


def start_nats(
    tmp: Path, name: str = "nats", auth: Path | None = None, tls: TlsFiles | None = None, profiling_port: int = 0
) -> NatsServer:
    """A real nats-server on a free port; with ``auth``, in operator mode with the platform's trust; with
    ``profiling_port``, its Go profiler there (the benchmark's ``--nats-profile``)."""
    config = NatsServerConfig(
        store_dir=tmp / name / "js", port=free_port(), server_name=name, profiling_port=profiling_port
    )
    if tls is not None:
        config.tls_cert, config.tls_key = tls.cert, tls.key
    if auth is not None:
        config.extra = identity.prepare(auth).server_config(tmp / name / "resolver")
    server = NatsServer(config, conf_path=tmp / name / "nats.conf", log_path=tmp / name / "nats.log")
    server.start()
    return server


@dataclass
class Proc:
    """A child process of ours (a service or an agent), with its log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    async def wait_exit(self, timeout: float = 15.0) -> int:
        assert self.proc is not None
        proc = self.proc
        await wait_for(lambda: proc.poll() is not None, timeout=timeout, what=f"{self.name} to exit")
        return int(proc.returncode)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Stack:
    """NATS plus every platform service as separate processes, and agents on demand."""

    tmp: Path
    env_overrides: dict[str, str] = field(default_factory=dict)
    nats: NatsServer | None = None
    services: dict[str, Proc] = field(default_factory=dict)
    agents: list[Proc] = field(default_factory=list)
    http_port: int = 0
    admin_token: str = ""
    tls: bool = False
    nats_profiling_port: int = 0
    """nats-server's Go profiler port (``NatsServerConfig.profiling_port``); 0: off."""

    @property
    def nats_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    @property
    def auth(self) -> Path:
        return self.tmp / "auth"

    async def nc(self) -> nats.aio.client.Client:
        """A NATS connection with the platform services' identity."""
        return await nats.connect(self.nats_url, user_credentials=str(self.auth / "platform.creds"))

    async def nc_as_agent_of(self, cluster: str, state_dir: Path, **kwargs: Any) -> nats.aio.client.Client:
        """A NATS connection with one agent's own credentials (from its state dir)."""
        from schemas.credentials import agent_inbox_prefix

        return await nats.connect(
            self.nats_url,
            user_credentials=str(state_dir / "nats.creds"),
            inbox_prefix=agent_inbox_prefix(cluster).encode(),
            **kwargs,
        )

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def paths(self) -> PlatformPaths:
        ca_file = str(self.tmp / "tls" / "ca.pem") if self.tls else ""
        return PlatformPaths(self.nats_url, self.auth, self.tmp / "admin.token", ca_file)

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(FAST_ENV)
        env.update(platform_env(self.paths))
        env.update(self.env_overrides)
        env.update(extra)
        return env

    def service(self, name: str) -> Proc:
        extra = service_env(name, self.paths, http_port=self.http_port)
        return Proc(
            name=name,
            argv=[sys.executable, "-m", f"services.{name}"],
            env=self.env(**extra),
            log=self.tmp / "logs" / f"{name}.log",
        )

    async def start(self, services: tuple[str, ...] = ("registry", "access", "lifecycle", "health", "api")) -> None:
        self.nats = start_nats(
            self.tmp,
            auth=self.auth,
            tls=ensure_tls(self.tmp / "tls") if self.tls else None,
            profiling_port=self.nats_profiling_port,
        )
        await self.nats.wait_ready()
        self.http_port = free_port()
        self.admin_token = "tat_" + os.urandom(24).hex()
        (self.tmp / "admin.token").write_text(self.admin_token)
        for name in services:
            self.services[name] = self.service(name).start()
        if "api" in services:
            await self.wait_healthy()

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        async def healthy() -> bool:
            for name, proc in self.services.items():
                if not proc.running:
                    # A service that died will not become healthy: say which, with its log, instead of timing out.
                    raise Abort(f"service {name} exited before the platform was healthy:\n{proc.output()[-4000:]}")
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{self.api}/healthz")).status_code == 200

        await wait_for(healthy, timeout=timeout, what="platform /healthz")

    def restart_service(self, name: str) -> Proc:
        self.services[name] = self.service(name).start()
        return self.services[name]

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api, timeout=10, headers={"Authorization": f"Bearer {token or self.admin_token}"}
        )

    async def connect_cluster(self, name: str, **body: Any) -> dict[str, Any]:
        async with self.http() as http:
            resp = await http.post("/api/v1/clusters", json={"name": name, **body})
            assert resp.status_code == 201, resp.text
            return dict(resp.json())

    async def cluster(self, name: str) -> dict[str, Any]:
        async with self.http() as http:
            resp = await http.get(f"/api/v1/clusters/{name}")
            assert resp.status_code == 200, resp.text
            return dict(resp.json())

    async def req(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> httpx.Response:
        async with self.http(token) as http:
            return await http.request(method, path, **kwargs)

    async def ok(self, method: str, path: str, *, token: str | None = None, **kwargs: Any) -> Any:
        resp = await self.req(method, path, token=token, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json()

    async def user(self, name: str) -> str:
        """Create a user; return their API token."""
        return str((await self.ok("POST", "/api/v1/users", json={"name": name}))["token"])

    async def connected(self, name: str, state_dir: Path, **env: str) -> Proc:
        """Connect a cluster and run its agent until it is online."""
        info = await self.connect_cluster(name)
        proc = self.agent(state_dir, info["token"], extra_env=env or None, name=f"agent-{name}")
        await self.wait_online(name)
        return proc

    async def workload(self, kind: str, project: str, name: str, token: str | None = None) -> dict[str, Any] | None:
        resp = await self.req("GET", f"/api/v1/projects/{project}/{kind}s/{name}", token=token)
        if resp.status_code == 404:
            return None
        assert resp.status_code == 200, resp.text
        return dict(resp.json())

    async def wait_synced(self, kind: str, project: str, name: str, timeout: float = 30.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            w = await self.workload(kind, project, name)
            return w if w and w["in_sync"] else None

        return await wait_for(check, timeout=timeout, what=f"{kind} {project}/{name} in sync")

    async def wait_gone(self, kind: str, project: str, name: str, timeout: float = 30.0) -> None:
        async def gone() -> bool:
            return await self.workload(kind, project, name) is None

        await wait_for(gone, timeout=timeout, what=f"{kind} {project}/{name} deleted")

    def agent(
        self,
        state_dir: Path,
        token: str | None = None,
        *,
        extra_env: dict[str, str] | None = None,
        name: str = "agent",
    ) -> Proc:
        argv = [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--server",
            self.nats_url,
            "--driver",
            "sim",
            "--state-dir",
            str(state_dir),
        ]
        if token:
            argv += ["--token", token]
        proc = Proc(
            name=name,
            argv=argv,
            env=self.env(**(extra_env or {})),
            log=self.tmp / "logs" / f"{name}-{len(self.agents)}.log",
        ).start()
        self.agents.append(proc)
        return proc

    async def wait_online(self, name: str, online: bool = True, timeout: float = 15.0) -> dict[str, Any]:
        async def check() -> dict[str, Any] | None:
            c = await self.cluster(name)
            return c if c["online"] is online else None

        return await wait_for(check, timeout=timeout, what=f"cluster {name} online={online}")

    def stop(self) -> None:
        for proc in self.agents:
            proc.stop()
        for proc in self.services.values():
            proc.stop()
        if self.nats:
            self.nats.stop()

    def logs(self) -> str:
        out = []
        for path in sorted((self.tmp / "logs").glob("*.log")):
            out.append(f"===== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


# --- a clustered platform: three nats-server nodes, two processes of every service ----------------------
def _monitor_json(server: NatsServer, path: str, timeout: float = 1.0) -> dict[str, Any]:
    """One JSON document from a node's monitoring port (``/jsz``, ``/connz``, ...)."""
    import urllib.request

    url = f"http://127.0.0.1:{server.config.monitor_port}{path}"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return dict(json.loads(resp.read()))


def monitor(server: NatsServer, path: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """``_monitor_json``, or None when the node does not answer."""
    try:
        return _monitor_json(server, path, timeout)
    except (OSError, ValueError):
        return None


def start_nats_cluster(tmp: Path, auth: Path, size: int = 3, cluster_name: str = "tether") -> list[NatsServer]:
    """``size`` nats-server processes clustered on loopback, JetStream on each (own store dir), every node
    routing to all the others, all in operator mode with the same trust (each with its own resolver dir)."""
    trust = identity.prepare(auth)
    ports: list[int] = []
    while len(ports) < 2 * size:
        port = free_port()
        if port not in ports:
            ports.append(port)
    client_ports, route_ports = ports[:size], ports[size:]
    nodes: list[NatsServer] = []
    for i in range(size):
        name = f"n{i}"
        config = NatsServerConfig(
            store_dir=tmp / name / "js",
            port=client_ports[i],
            server_name=name,
            cluster_name=cluster_name,
            cluster_port=route_ports[i],
            routes=[f"nats-route://127.0.0.1:{p}" for j, p in enumerate(route_ports) if j != i],
            extra=trust.server_config(tmp / name / "resolver"),
        )
        server = NatsServer(config, conf_path=tmp / name / "nats.conf", log_path=tmp / name / "nats.log")
        nodes.append(server)
    try:
        for server in nodes:
            server.start()
    except BaseException:
        for server in nodes:
            server.stop()
        raise
    return nodes


def meta_leader(nodes: list[NatsServer]) -> str | None:
    """The JetStream meta leader's server name when every running node agrees on one, else None."""
    leaders = set()
    for server in nodes:
        if server.proc is None or server.proc.poll() is not None:
            continue
        jsz = monitor(server, "/jsz")
        leader = ((jsz or {}).get("meta_cluster") or {}).get("leader")
        if not leader:
            return None
        leaders.add(leader)
    return leaders.pop() if len(leaders) == 1 else None


async def wait_jetstream_cluster(nodes: list[NatsServer], timeout: float = 30.0) -> str:
    """Wait until every node is healthy and all agree on a JetStream meta leader; return its name."""
    for server in nodes:
        await server.wait_ready(timeout)
    return await wait_for(
        lambda: asyncio.to_thread(meta_leader, nodes), timeout=timeout, what="a JetStream meta leader"
    )


def clients_of(server: NatsServer) -> list[str]:
    """Names of the client connections a node holds (empty when it does not answer)."""
    connz = monitor(server, "/connz?limit=1024") or {}
    return [str(c.get("name") or "") for c in connz.get("connections") or []]


@dataclass
class ClusteredStack(Stack):
    """The scaled-out topology without containers: a 3-node JetStream cluster, ``per_service`` processes of
    every service (APIs on different HTTP ports), streams and buckets at 3 replicas."""

    per_service: int = 2
    nodes: list[NatsServer] = field(default_factory=list)
    replicas: dict[str, list[Proc]] = field(default_factory=dict)
    api_ports: list[int] = field(default_factory=list)

    @property
    def nats_url(self) -> str:
        return ",".join(server.url for server in self.nodes)

    @property
    def live_nodes(self) -> list[NatsServer]:
        return [s for s in self.nodes if s.proc is not None and s.proc.poll() is None]

    async def nc(self) -> nats.aio.client.Client:
        return await nats.connect(
            [s.url for s in self.nodes], user_credentials=str(self.auth / "platform.creds"), max_reconnect_attempts=-1
        )

    @property
    def apis(self) -> list[str]:
        """Base URLs of the API processes still running."""
        procs = self.replicas.get("api", [])
        return [f"http://127.0.0.1:{port}" for port, proc in zip(self.api_ports, procs, strict=False) if proc.running]

    @property
    def api(self) -> str:
        live = self.apis
        return live[0] if live else f"http://127.0.0.1:{self.http_port}"

    def replica(self, name: str, index: int) -> Proc:
        proc = self.service(name)
        proc.name = f"{name}-{index}"
        proc.log = self.tmp / "logs" / f"{name}-{index}.log"
        if name == "api":
            proc.env["TETHER_HTTP_PORT"] = str(self.api_ports[index])
        return proc

    async def start(self, services: tuple[str, ...] = ("registry", "access", "lifecycle", "health", "api")) -> None:
        self.env_overrides.setdefault("TETHER_REPLICAS", "3")
        self.nodes = start_nats_cluster(self.tmp, self.auth)
        await wait_jetstream_cluster(self.nodes)
        self.api_ports = [free_port() for _ in range(self.per_service)]
        self.http_port = self.api_ports[0]
        self.admin_token = "tat_" + os.urandom(24).hex()
        (self.tmp / "admin.token").write_text(self.admin_token)
        for name in services:
            self.replicas[name] = [self.replica(name, i).start() for i in range(self.per_service)]
            self.services[name] = self.replicas[name][0]
        await self.wait_replicas_ready()
        if "api" in services:
            await self.wait_healthy()

    READY_LINES = {
        "registry": "registry ready",
        "access": "access ready",
        "lifecycle": "lifecycle ready",
        "health": "health ready",
        "api": "api listening on",
    }

    async def wait_replicas_ready(self, timeout: float = 60.0) -> None:
        """Every process of every service has logged that it is ready (fail at once if one exited)."""

        def ready() -> bool:
            for name, procs in self.replicas.items():
                for proc in procs:
                    if not proc.running:
                        raise Abort(f"{proc.name} exited during start:\n{proc.output()[-3000:]}")
                    if self.READY_LINES.get(name, "") not in proc.output():
                        return False
            return True

        await wait_for(ready, timeout=timeout, interval=0.2, what="every service replica ready")

    def stop(self) -> None:
        for proc in self.agents:
            proc.stop()
        for procs in self.replicas.values():
            for proc in procs:
                proc.stop()
        for server in self.nodes:
            server.stop()

    def logs(self) -> str:
        out = [super().logs()]
        for server in self.nodes:
            if server.log_path and server.log_path.exists():
                text = server.log_path.read_text(errors="replace")
                out.append(f"===== nats {server.config.server_name}\n{text[-3000:]}")
        return "\n".join(out)


R = TypeVar("R", bound=Message)


class CountingBucket(Bucket[R]):
    """A bucket that counts its reads: tests assert a write path that should not read."""

    reads = 0

    async def get(self, key: str) -> tuple[R, int] | None:
        self.reads += 1
        return await super().get(key)

    async def latest(self, pattern: str) -> Latest[R] | None:
        self.reads += 1
        return await super().latest(pattern)


# --- shared by the suites that run a platform and real agents (gateway, kube) ------------------------------
def kube_agent(
    stack: Stack,
    kubeconfig: Path,
    state_dir: Path,
    token: str | None = None,
    *,
    name: str = "agent-kube",
    env: dict[str, str] | None = None,
) -> Proc:
    """``agent run`` on the kube driver against ``stack``, as a process the stack stops; the token on the
    command line, or (``env``) wherever the test puts it (a Deployment gives it in the environment)."""
    argv = [sys.executable, "-m", "agent", "run", "--server", stack.nats_url, "--driver", "kube"]
    argv += ["--kubeconfig", str(kubeconfig), "--state-dir", str(state_dir)]
    if token:
        argv += ["--token", token]
    proc = Proc(name=name, argv=argv, env=stack.env(**(env or {})), log=stack.tmp / "logs" / f"{name}.log").start()
    stack.agents.append(proc)
    return proc


@contextlib.asynccontextmanager
async def running(stack: Stack, request: Any) -> AsyncIterator[Stack]:
    """``stack`` started for one test and stopped after it, its logs printed when the test failed (a
    ``stack`` fixture's body; ``request`` is the fixture's ``pytest.FixtureRequest``)."""
    try:
        await stack.start()
        yield stack
    finally:
        stack.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(stack.logs())
