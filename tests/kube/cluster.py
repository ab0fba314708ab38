"""A real test cluster: etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok.

All built by ``tests/tools/kubebin/build.sh``. kwok plays the kubelets of ``nodes`` fake nodes
(``tests/kube/workers.py``): Deployments and StatefulSets make pods that are scheduled and become
Running/Ready, PersistentVolumeClaims of the default StorageClass get a volume, deleted namespaces
finalize, garbage collection works, and ``kubectl logs/exec/port-forward`` reach kwok's fake kubelet.
``with_workers=False`` gives the bare API server of before (like controller-runtime's envtest): there a
deleted namespace stays ``Terminating`` until ``finalize_namespace`` plays the namespace controller.
Identities come from a token file: ``admin`` (``system:masters``) and
``narrow`` (no rights until a test grants some).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import httpx
import pytest
import yaml

from agent.drivers.kube import KubeApi
from services.platform.natsd import free_port
from tests.kube.workers import Workers

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "tests" / "tools" / "kubebin" / "build.sh"
HELM_SCRIPT = ROOT / "tests" / "tools" / "kubebin" / "helm.sh"
NO_GO = 3
"""build.sh's exit status when there is no usable Go toolchain."""


class KubeBinUnavailable(Exception):
    """The binaries cannot be built here because there is no Go toolchain (build.sh exit 3)."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(what: str, exc: KubeBinUnavailable) -> NoReturn:
    """Skip the test (no Go here), except in CI where the kube tests must run: fail it."""
    reason = f"{what} cannot be built here (no Go toolchain): {exc}"
    if in_ci():
        pytest.fail(f"{reason}; in CI (CI=true) the kube tests must run, not skip")
    pytest.skip(reason)


def build_binaries() -> Path:
    """The directory holding ``etcd`` and ``kube-apiserver`` (built and cached on first use)."""
    proc = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True)
    if proc.returncode == NO_GO:
        raise KubeBinUnavailable(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return Path(lines[-1].strip())


def build_helm() -> Path:
    """The ``helm`` binary (built and cached on first use); KubeBinUnavailable without Go."""
    proc = subprocess.run(["bash", str(HELM_SCRIPT)], capture_output=True, text=True)
    if proc.returncode == NO_GO:
        raise KubeBinUnavailable(proc.stderr.strip())
    if proc.returncode != 0:
        raise RuntimeError(f"{HELM_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return Path([line for line in proc.stdout.splitlines() if line.strip()][-1].strip())


@dataclass
class ControlPlane:
    """One etcd and one kube-apiserver on free loopback ports, in ``workdir``, and (``with_workers``) the
    controllers, the scheduler and kwok with ``nodes`` fake nodes."""

    bin_dir: Path
    workdir: Path
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    narrow_token: str = field(default_factory=lambda: secrets.token_hex(16))
    api_port: int = 0
    etcd: subprocess.Popen[bytes] | None = None
    apiserver: subprocess.Popen[bytes] | None = None
    started_in: float = 0.0
    with_workers: bool = True
    nodes: int = 2
    workers: Workers | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.api_port}"

    @property
    def ca_file(self) -> Path:
        return self.workdir / "certs" / "apiserver.crt"

    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    def narrow_kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig-narrow"

    def start(self, timeout: float = 60.0) -> ControlPlane:
        w = self.workdir
        (w / "etcd-data").mkdir(mode=0o700, parents=True)
        (w / "certs").mkdir(mode=0o700)
        subprocess.run(
            ["openssl", "genrsa", "-out", str(w / "sa.key"), "2048"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        (w / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n{self.narrow_token},narrow,narrow\n'
        )
        etcd_port, peer_port, self.api_port = free_port(), free_port(), free_port()
        begin = time.monotonic()
        with open(w / "etcd.log", "ab") as log:
            self.etcd = subprocess.Popen(
                [
                    str(self.bin_dir / "etcd"),
                    "--name=default",
                    f"--data-dir={w / 'etcd-data'}",
                    f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                    f"--listen-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-advertise-peer-urls=http://127.0.0.1:{peer_port}",
                    f"--initial-cluster=default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync=true",
                    "--log-level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with open(w / "kube-apiserver.log", "ab") as log:
            self.apiserver = subprocess.Popen(
                [
                    str(self.bin_dir / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    "--endpoint-reconciler-type=none",
                    f"--secure-port={self.api_port}",
                    f"--cert-dir={w / 'certs'}",
                    "--authorization-mode=RBAC",
                    f"--token-auth-file={w / 'tokens.csv'}",
                    f"--service-account-issuer=https://127.0.0.1:{self.api_port}",
                    f"--service-account-key-file={w / 'sa.key'}",
                    f"--service-account-signing-key-file={w / 'sa.key'}",
                    "--service-cluster-ip-range=10.0.0.0/24",
                    "--allow-privileged=true",
                    "--disable-admission-plugins=ServiceAccount",
                    # kwok's nodes are reached by IP (their host names resolve nowhere) for logs, exec, port-forward.
                    "--kubelet-preferred-address-types=InternalIP",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        self._write_kubeconfig(self.kubeconfig(), "admin", self.admin_token)
        self._write_kubeconfig(self.narrow_kubeconfig(), "narrow", self.narrow_token)
        api = KubeApi.from_kubeconfig(self.kubeconfig())
        try:
            if self.with_workers:
                self.workers = Workers(
                    bin_dir=self.bin_dir,
                    workdir=w,
                    kubeconfig=self.kubeconfig(),
                    cert_file=self.ca_file,
                    key_file=w / "certs" / "apiserver.key",
                    sa_key_file=w / "sa.key",
                    nodes=self.nodes,
                )
                self.workers.start(api, timeout)
            else:
                aggregate_cluster_roles(api)
        except BaseException:
            api.close()
            self.stop()
            raise
        api.close()
        self.started_in = time.monotonic() - begin
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        with httpx.Client(verify=False, timeout=2) as http:
            while time.monotonic() < deadline:
                for name, proc in (("etcd", self.etcd), ("kube-apiserver", self.apiserver)):
                    if proc is not None and proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
                try:
                    resp = http.get(f"{self.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"})
                    if resp.status_code == 200 and resp.text.strip() == "ok":
                        return
                    last = f"{resp.status_code} {resp.text[-300:]}"
                except httpx.HTTPError as exc:
                    last = repr(exc)
                time.sleep(0.1)
        raise RuntimeError(f"kube-apiserver not ready after {timeout:g}s (last: {last})\n{self.log('kube-apiserver')}")

    def _write_kubeconfig(self, path: Path, user: str, token: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "test", "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)}}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)

    def write_token_kubeconfig(self, path: Path, user: str, token: str) -> Path:
        """A kubeconfig for another identity (e.g. a ServiceAccount token)."""
        self._write_kubeconfig(path, user, token)
        return path

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """kwok and the controllers, then kube-apiserver, then etcd; SIGKILL whatever does not stop within 10 s.

        The volumes the hostPath provisioner made for this cluster (empty directories under /tmp) go too."""
        volumes: list[Path] = []
        if self.workers is not None:
            volumes = self._volume_paths()
            self.workers.stop()
        for proc in (self.apiserver, self.etcd):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for path in volumes:
            shutil.rmtree(path, ignore_errors=True)

    def _volume_paths(self) -> list[Path]:
        assert self.workers is not None
        if self.apiserver is None or self.apiserver.poll() is not None:
            return []
        try:
            api = KubeApi.from_kubeconfig(self.kubeconfig(), timeout=5)
        except Exception:
            return []
        try:
            return self.workers.volume_paths(api)
        except Exception:
            return []
        finally:
            api.close()


def _matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


def aggregate_cluster_roles(api: KubeApi) -> None:
    """Fill the aggregated ClusterRoles (``admin``, ``edit``, ``view``...), as kube-controller-manager would."""
    for _ in range(5):  # edit aggregates into admin, view into edit: a few rounds reach the fixed point
        roles = api.list("ClusterRole")
        changed = False
        for role in roles:
            rule = role.get("aggregationRule")
            if not rule:
                continue
            merged: list[dict[str, Any]] = []
            for other in roles:
                if other["metadata"]["name"] == role["metadata"]["name"]:
                    continue
                labels = other["metadata"].get("labels") or {}
                if any(_matches(sel, labels) for sel in rule.get("clusterRoleSelectors") or []):
                    merged.extend(r for r in other.get("rules") or [] if r not in merged)
            if merged != (role.get("rules") or []):
                api.patch_merge("ClusterRole", role["metadata"]["name"], {"rules": merged})
                changed = True
        if not changed:
            return
