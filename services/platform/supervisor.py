"""``tether up``: start NATS, every service and the local agent; restart what dies; stop in order."""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from schemas.retrying import backoff_delay
from services.bus import identity
from services.platform import api_client
from services.platform.children import Child, ChildBuilder, metrics_lines, public_nats_url
from services.platform.endpoint import ApiEndpoint
from services.platform.environment import SERVICES, PlatformPaths
from services.platform.errors import PlatformError
from services.platform.natsd import GO_GC, GO_MEMORY_LIMIT, NatsServer, NatsServerConfig, NatsServerError
from services.platform.tls import ensure_tls

# The CLI and the tests import SERVICES and PlatformError from here too (they are defined elsewhere).
__all__ = ["SERVICES", "Platform", "PlatformError", "UpSettings", "default_data_dir", "detect_local_driver"]

PERMANENT_EXIT = 2  # the agent's "do not restart me" code (revoked, bad token)


def default_data_dir() -> Path:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "tether"


def detect_local_driver() -> tuple[str, str]:
    """(driver, why): kube when a kubeconfig or in-cluster config is found, else sim."""
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        return "kube", "in-cluster configuration found"
    kubeconfig = os.environ.get("KUBECONFIG")
    if kubeconfig and any(Path(p).exists() for p in kubeconfig.split(os.pathsep) if p):
        return "kube", f"KUBECONFIG={kubeconfig}"
    if (Path.home() / ".kube" / "config").exists():
        return "kube", "~/.kube/config found"
    return "sim", "no kubeconfig or in-cluster configuration found"


@dataclass
class UpSettings:
    data_dir: Path = field(default_factory=default_data_dir)
    """Everything the platform keeps: JetStream data, admin token, local agent state, logs."""

    nats_port: int = 4222
    """NATS client port (agents dial it)."""

    nats_host: str = "127.0.0.1"
    """NATS listen address; 0.0.0.0 lets agents on other machines connect."""

    http_port: int = 8080
    """API and web UI port."""

    http_host: str = "127.0.0.1"
    """API and web UI listen address; 0.0.0.0 lets members on other machines connect."""

    https: bool = True
    """API and web UI over HTTPS, with a certificate the platform's own CA signs (``<data-dir>/tls``). kubectl
    sends credentials only over TLS, so the Kubernetes gateway needs it; False (plain HTTP) is for tests and
    development only."""

    public_hosts: list[str] = field(default_factory=list)
    """Names (or addresses) other machines reach this one by: the server certificate is valid for them too,
    besides localhost, 127.0.0.1, ::1 and this machine's hostname."""

    local_driver: str | None = None
    """Driver of the local cluster's agent: sim, kube, or None to detect."""

    heartbeat_interval: float = 5.0
    """Seconds between agent heartbeats."""

    offline_after: float = 12.0
    """Seconds of silence before a cluster is shown offline."""

    tls: bool = False
    """NATS over TLS with a private CA made on first start (agents verify it with ``--ca-file``)."""

    nats_go_gc: int | None = GO_GC
    """nats-server's Go garbage collection target (``GOGC``; see ``NatsServerConfig.go_gc`` for the memory it
    trades for fewer stalls; None: Go's default). ``GOGC`` in ``tether up``'s environment wins."""

    nats_go_memory_limit: str | None = GO_MEMORY_LIMIT
    """nats-server's Go soft memory limit (``GOMEMLIMIT``, e.g. ``"4GiB"``; None: none). ``GOMEMLIMIT`` in
    ``tether up``'s environment wins."""


class Platform:
    def __init__(
        self,
        settings: UpSettings,
        say: Callable[[str], None],
        on_ready: Callable[[str, str, str], None] | None = None,
    ) -> None:
        self.s = settings
        self.say = say
        self.on_ready = on_ready
        self.data = settings.data_dir.resolve()
        self.logs = self.data / "logs"
        self.auth = self.data / "auth"
        self.agent_state = self.data / "agents" / "local"
        self.nats = NatsServer(
            NatsServerConfig(
                store_dir=self.data / "nats",
                port=settings.nats_port,
                host=settings.nats_host,
                server_name="tether-embedded",
                go_gc=settings.nats_go_gc,
                go_memory_limit=settings.nats_go_memory_limit,
            ),
            conf_path=self.data / "nats.conf",
            log_path=self.logs / "nats-server.log",
        )
        self.children: list[Child] = []
        self.ca_file = ""
        self.endpoint = ApiEndpoint(host=settings.http_host, port=settings.http_port)
        self._lock_fd: int | None = None
        self._stopping = False

    @property
    def api_url(self) -> str:
        return self.endpoint.url

    # -- files -----------------------------------------------------------------
    def lock(self) -> None:
        self.data.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.data / "tether.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise PlatformError(f"another 'tether up' is already running on {self.data}") from None
        self._lock_fd = fd

    def admin_token(self) -> tuple[str, bool]:
        path = self.data / "admin.token"
        if path.exists():
            return path.read_text().strip(), False
        token = "tat_" + secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
        return token, True

    # -- children --------------------------------------------------------------
    @property
    def paths(self) -> PlatformPaths:
        return PlatformPaths(self.nats.url, self.auth, self.data / "admin.token", self.ca_file)

    def child_builder(self) -> ChildBuilder:
        """Only once NATS and TLS are set up: every child's environment carries the bus's URL and CA."""
        s = self.s
        return ChildBuilder(
            paths=self.paths,
            endpoint=self.endpoint,
            logs=self.logs,
            agent_state=self.agent_state,
            public_nats_url=public_nats_url(self.nats.url, s.nats_host, s.nats_port, tls=s.tls),
            heartbeat_interval=s.heartbeat_interval,
            offline_after=s.offline_after,
        )

    async def supervise(self, child: Child) -> None:
        """Restart a child that dies, with backoff, until the platform stops."""
        while not self._stopping:
            assert child.proc is not None
            code = await child.proc.wait()
            if self._stopping:
                return
            if code == PERMANENT_EXIT:
                child.permanent_exit = True
                self.say(f"{child.name} stopped for good (exit {code}); see {child.log}")
                return
            delay = backoff_delay(min(child.restarts, 6), base=0.5, cap=10.0)
            child.restarts += 1
            self.say(f"{child.name} exited with code {code}; restarting in {delay:.1f}s (see {child.log})")
            await asyncio.sleep(delay)
            if not self._stopping:
                await child.start()

    async def supervise_nats(self) -> None:
        """Restart nats-server when it dies, like every other child: the services and agents reconnect on
        their own, and what JetStream acknowledged is on disk (``sync_interval: always``)."""
        restarts = 0
        while not self._stopping:
            proc = self.nats.proc
            assert proc is not None
            code = await asyncio.to_thread(proc.wait)
            if self._stopping:
                return
            delay = backoff_delay(min(restarts, 6), base=0.5, cap=10.0)
            restarts += 1
            self.say(f"nats-server exited with code {code}; restarting in {delay:.1f}s (see {self.nats.log_path})")
            await asyncio.sleep(delay)
            if self._stopping:
                return
            self.nats.start()
            try:
                await self.nats.wait_ready()
            except NatsServerError as exc:
                self.say(f"nats-server did not come back: {exc}")
                continue
            self.say(f"nats-server is back on {self.nats.url}")

    async def run(self) -> None:
        self.lock()
        token, first = self.admin_token()
        driver, why = (
            (self.s.local_driver, "chosen with --local-driver") if self.s.local_driver else detect_local_driver()
        )
        self.say(f"data dir: {self.data}")
        # Broker-enforced identities, always: each agent may use only its own cluster's subjects.
        trust = identity.prepare(self.auth)
        self.nats.config.extra = trust.server_config(self.data / "nats-resolver")
        if self.s.tls or self.s.https:
            # One CA for both: made once and kept, so the kubeconfigs and contexts that carry it stay valid.
            files = ensure_tls(self.data / "tls", hosts=self.s.public_hosts)
            if self.s.tls:
                self.nats.config.tls_cert, self.nats.config.tls_key = files.cert, files.key
                self.ca_file = str(files.ca)
            if self.s.https:
                self.endpoint.files = files
        self.nats.start()
        try:
            await self.nats.wait_ready()
            self.say(f"nats-server with JetStream on {self.nats.url}")
            build = self.child_builder()
            self.children = [build.service(name) for name in SERVICES]
            for child in self.children:
                await child.start()
            await api_client.wait_healthy(self.endpoint, self.children)
            agent_token = await api_client.local_agent_token(self.endpoint, token, self.agent_state)
            agent = build.agent(driver, agent_token)
            self.children.append(agent)
            await agent.start()
            self.say(f"local cluster agent: driver {driver} ({why})")
            for line in metrics_lines():
                self.say(line)
            if self.on_ready is not None:
                self.on_ready(self.api_url, token, self.endpoint.ca_file)
            self.say(f"Tether API and web UI: {self.api_url}")
            for line in self.endpoint.lines(self.s.public_hosts):
                self.say(line)
            if first:
                self.say(f"admin user 'admin' created; API token (also in {self.data / 'admin.token'}):")
                self.say(f"  {token}")
            else:
                self.say(f"admin API token: {self.data / 'admin.token'}")
            self.say("ready. Try: tether cluster list   (Ctrl-C stops everything)")
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.supervise_nats(), name="supervise-nats")
                for child in self.children:
                    tg.create_task(self.supervise(child), name=f"supervise-{child.name}")
        finally:
            await self.shutdown()

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        self.say("stopping... (Ctrl-C again to stop at once)")
        # Agent first, then the API, then the services, NATS last: each drains into a live bus.
        order = sorted(self.children, key=lambda c: (c.name != "agent-local", c.name != "api"))
        agents_api = [c for c in order if c.name in ("agent-local", "api")]
        for child in agents_api:
            await child.stop()
        await asyncio.gather(*(c.stop() for c in order if c not in agents_api))
        await asyncio.to_thread(self.nats.stop)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self.say("stopped.")

    def force_stop(self) -> None:
        """A second Ctrl-C: kill what still runs instead of waiting for it to drain. The shutdown in progress
        goes on (it is not cancelled, so nothing is left behind) and finds every process gone."""
        if not self._stopping:
            return
        self.say("stopping at once: killing what is still running")
        for child in self.children:
            child.kill_now()
        self.nats.kill_now()
