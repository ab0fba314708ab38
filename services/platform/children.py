"""The processes ``tether up`` runs besides nats-server (every service and the local agent): how each is built
(command line, environment, log file, scrape port) and how one is started and stopped. Restarting them is the
supervisor's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from services.platform.endpoint import ApiEndpoint
from services.platform.environment import SERVICES, PlatformPaths, platform_env, service_env
from services.platform.errors import PlatformError

logger = logging.getLogger(__name__)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: asyncio.subprocess.Process | None = None
    restarts: int = 0
    permanent_exit: bool = False

    async def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, env=self.env, stdout=fd, stderr=fd, start_new_session=True
            )
        finally:
            os.close(fd)

    async def stop(self, timeout: float = 10.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            logger.warning("%s did not stop within %gs; killing it", self.name, timeout)
            proc.kill()
            await proc.wait()

    def kill_now(self) -> None:
        """SIGKILL without waiting; a ``stop()`` in progress then returns at once."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()


def metrics_port(name: str) -> int | None:
    """Each service's own scrape port under ``tether up``: ``TETHER_PROMETHEUS_PORT`` is the first, the
    others follow in SERVICES order (one port each: they are separate processes; the same port for all
    made every one but the first crash). None: no endpoints."""
    base = os.environ.get("TETHER_PROMETHEUS_PORT", "").strip()
    if not base or name not in SERVICES:
        return None
    if not base.isdigit() or not 0 < int(base) <= 65535 - len(SERVICES):
        raise PlatformError(f"TETHER_PROMETHEUS_PORT={base!r}: expected a port number (the first of {len(SERVICES)})")
    return int(base) + SERVICES.index(name)


def metrics_lines() -> list[str]:
    """What ``tether up`` prints about its scrape endpoints."""
    host = os.environ.get("TETHER_PROMETHEUS_HOST") or "127.0.0.1"
    ports = {name: metrics_port(name) for name in SERVICES}
    return [f"metrics of {name}: http://{host}:{port}/metrics" for name, port in ports.items() if port]


def public_nats_url(nats_url: str, host: str, port: int, *, tls: bool) -> str:
    """The NATS URL agents are told to dial: this host's name when NATS listens on every address."""
    if host not in ("0.0.0.0", "::"):
        return nats_url
    return f"{'tls' if tls else 'nats'}://{socket.getfqdn()}:{port}"


@dataclass(frozen=True)
class ChildBuilder:
    """Builds ``tether up``'s children. Made only once NATS and TLS are set up: every child's environment
    carries the bus's URL, credentials and CA, and the API's certificate."""

    paths: PlatformPaths
    endpoint: ApiEndpoint
    logs: Path
    """Where each child's output goes, one ``<name>.log`` each."""
    agent_state: Path
    """The local agent's state directory (its credentials once connected)."""
    public_nats_url: str
    heartbeat_interval: float
    offline_after: float

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(platform_env(self.paths))
        env.update(
            TETHER_HEARTBEAT_INTERVAL=str(self.heartbeat_interval),
            TETHER_OFFLINE_AFTER=str(self.offline_after),
            PYTHONUNBUFFERED="1",
        )
        env.update(extra)
        return env

    def service(self, name: str) -> Child:
        extra = service_env(
            name,
            self.paths,
            http_port=self.endpoint.port,
            public_nats_url=self.public_nats_url,
            metrics_port=metrics_port(name),
            http=self.endpoint.serving(),
        )
        return Child(
            name=name,
            argv=[sys.executable, "-m", f"services.{name}"],
            env=self._env(**extra),
            log=self.logs / f"{name}.log",
        )

    def agent(self, driver: str, token: str | None) -> Child:
        argv = [
            sys.executable,
            "-m",
            "agent",
            "run",
            "--server",
            self.paths.nats_url,
            "--driver",
            driver,
            "--state-dir",
            str(self.agent_state),
        ]
        if self.paths.ca_file:
            argv += ["--ca-file", self.paths.ca_file]
        # The connect token goes in the environment, never the command line: any local user can read a
        # process's arguments (ps, /proc/<pid>/cmdline), only its owner its environment.
        env = self._env(TETHER_AGENT_TOKEN=token) if token else self._env()
        env.pop("TETHER_PROMETHEUS_PORT", None)  # the services' ports, not the agent's
        return Child(name="agent-local", argv=argv, env=env, log=self.logs / "agent-local.log")
