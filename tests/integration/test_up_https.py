"""``tether up`` serves its API over HTTPS by itself, and real kubectl uses the kubeconfig it hands out.

kubectl sends credentials (a bearer token, an exec plugin's) only over TLS, so the Kubernetes gateway is no use
behind plain HTTP: the platform makes its own CA once (``<data-dir>/tls``), serves the API and the web UI with a
certificate that CA signed, writes the CA into the CLI context and into every kubeconfig, and keeps it across
restarts so the kubeconfigs stay valid. Plain HTTP is an explicit opt-out (``--insecure-http``).
"""

from __future__ import annotations

import base64
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.platform.tls import ensure_tls
from tests.harness import wait_for
from tests.kube.conftest import control_plane, kube_bin, kubeconfig  # noqa: F401  (shared fixtures)
from tests.upstack import Up

KUBECTL = Path(sys.executable).parent / "kubectl"


def kubectl(config: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """The real kubectl with only ``config`` (and the Tether CLI config ``env`` names) to go by."""
    return subprocess.run(
        [str(KUBECTL), f"--kubeconfig={config}", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def member_env(platform: Up) -> dict[str, str]:
    """What a user's shell has: PATH and the Tether CLI's config (no TETHER_CA_FILE, no token)."""
    env = platform.env
    return {"PATH": os.environ.get("PATH", ""), "HOME": env["HOME"], "TETHER_CONFIG": env["TETHER_CONFIG"]}


def handshake(url: str, context: ssl.SSLContext) -> None:
    """A TLS handshake with the server of ``url`` that verifies its certificate and its name."""
    host, port = url.removeprefix("https://").split("/")[0].rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as raw, context.wrap_socket(raw, server_hostname=host):
        pass


def cluster_of(config: dict[str, Any]) -> dict[str, Any]:
    (entry,) = config["clusters"]
    return dict(entry["cluster"])


@pytest.mark.kube
async def test_kubectl_through_tether_up_over_https(up: Up, kubeconfig: Path, tmp_path: Path) -> None:  # noqa: F811
    up.env["KUBECONFIG"] = str(kubeconfig)  # the local cluster is the real kube-apiserver (kube driver)
    first = up.start()
    await up.wait_ready()  # /healthz over HTTPS, verified with <data-dir>/tls/ca.pem only
    ca_pem = (up.data / "tls" / "ca.pem").read_bytes()
    assert f"Tether API and web UI: https://127.0.0.1:{up.http_port}" in first.output()
    assert "driver kube" in first.output()
    # The web UI is served by the same HTTPS listener.
    page = httpx.get(f"{up.api}/", verify=up.verify())
    assert page.status_code == 200 and "<html" in page.text
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{up.api}/healthz")  # the system's CAs do not vouch for it: only the platform's CA does
    await wait_for(lambda: up.clusters().get("local", {}).get("online"), timeout=30, what="local online")

    # A member logs in to the platform: the CLI finds its CA by itself (no --ca-file), from tether up's context.
    bob = up.cli("user", "create", "bob", "--email", "bob@example.com", "-q").stdout.strip()
    up.cli("project", "create", "p1", "--cluster", "local")
    up.cli("project", "add-member", "p1", "--user", "bob", "--role", "user")
    up.cli("login", "--server", up.api, "--token", bob)
    up.cli("space", "create", "s1", "-p", "p1", "--cluster", "local", "--wait")
    text = up.cli("space", "kubeconfig", "s1", "-p", "p1").stdout
    up.cli("config", "use-context", "data")  # the admin's context is current again: the kubeconfig stays bob's
    config = yaml.safe_load(text)
    cluster = cluster_of(config)
    assert cluster["server"] == f"{up.api}/kubernetes/project/p1/space/s1"
    assert base64.b64decode(cluster["certificate-authority-data"]) == ca_pem
    assert "insecure-skip-tls-verify" not in text
    # The CA the kubeconfig carries verifies the server (name included); another CA does not.
    handshake(cluster["server"], ssl.create_default_context(cadata=ca_pem.decode()))
    stranger = ensure_tls(tmp_path / "stranger-ca")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(cluster["server"], ssl.create_default_context(cafile=str(stranger.ca)))

    path = tmp_path / "s1.kubeconfig"
    path.write_text(text)
    env = member_env(up)
    got = kubectl(path, env, "get", "pods")
    assert got.returncode == 0 and "No resources found in tether-p1-s1 namespace" in got.stderr, got.stderr
    can = kubectl(path, env, "auth", "can-i", "create", "pods")
    assert can.returncode == 0 and can.stdout.strip() == "yes", can.stdout + can.stderr
    made = kubectl(path, env, "create", "configmap", "over-https", "--from-literal=a=1")
    assert made.returncode == 0, made.stderr
    assert "over-https" in kubectl(path, env, "get", "configmaps", "-o", "name").stdout
    assert kubectl(path, env, "auth", "can-i", "get", "nodes").stdout.strip() == "no", "the space only"
    whoami = kubectl(path, env, "auth", "whoami")
    assert whoami.returncode == 0 and "tether:user:bob" in whoami.stdout, whoami.stdout + whoami.stderr

    # Restarted, the platform keeps its CA: the kubeconfig handed out before still works.
    assert first.stop(timeout=30) == 0
    up.start()
    await up.wait_ready()
    assert (up.data / "tls" / "ca.pem").read_bytes() == ca_pem
    # Straight away, as a member would: the cluster shows online as stored before the restart while its agent
    # may still be reconnecting; the gateway then answers 503 with Retry-After and kubectl tries again itself.
    again = kubectl(path, env, "get", "configmap", "over-https", "-o", "name")
    assert again.returncode == 0 and again.stdout.strip() == "configmap/over-https", again.stderr
    assert up.clusters().get("local", {}).get("online")


async def test_plain_http_is_an_explicit_opt_out(up: Up, tmp_path: Path) -> None:
    up.extra_args = ["--insecure-http", "--local-driver", "sim"]
    proc = up.start()
    await wait_for(lambda: "ready." in proc.output() or not proc.running, timeout=60, what="tether up ready")
    assert proc.running, proc.output()
    api = f"http://127.0.0.1:{up.http_port}"
    assert f"Tether API and web UI: {api}" in proc.output()
    assert "plain HTTP (--insecure-http): kubectl will send it no credentials" in proc.output()
    assert not (up.data / "tls").exists(), "no CA is made for plain HTTP"
    await wait_for(lambda: up.clusters().get("local", {}).get("online"), timeout=30, what="local online")
    up.cli("project", "create", "p1", "--cluster", "local")
    up.cli("space", "create", "s1", "-p", "p1", "--cluster", "local", "--wait")
    text = up.cli("space", "kubeconfig", "s1", "-p", "p1").stdout
    assert cluster_of(yaml.safe_load(text)) == {"server": f"{api}/kubernetes/project/p1/space/s1"}
    path = tmp_path / "s1.kubeconfig"
    path.write_text(text)
    # Why HTTPS is the default: over plain HTTP kubectl sends no credential (-v=8 would show the Authorization
    # header, masked), so every call is refused as unauthenticated.
    got = kubectl(path, member_env(up), "get", "pods", "-v=8")
    assert got.returncode != 0 and "You must be logged in to the server" in got.stderr, got.stderr
    assert f"{api}/kubernetes/project/p1/space/s1/api" in got.stderr and "Authorization" not in got.stderr
