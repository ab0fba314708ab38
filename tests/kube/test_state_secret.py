"""A rescheduled agent pod is the same agent: every identity file survives in the state Secret.

The pod's state directory is an ``emptyDir``: a pod rescheduled onto another node starts with an empty
one, and its connect token was spent by its first start. The kube driver keeps exactly the files
``agent.identity.STATE_FILES`` names in the Secret ``tether-agent-state``, so the new pod restores the
agent's platform credential *and* its own NATS user (JWT and nkey seed) and connects as itself.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from agent.identity import NATS_CREDS_FILE, STATE_FILES
from services.api import manifests
from tests.harness import Proc, Stack, kube_agent, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.test_kube_agent_e2e import install

pytestmark = pytest.mark.kube

STATE_SECRET_REF = f"{manifests.NAMESPACE}/{manifests.STATE_SECRET}"


def pod(stack: Stack, kubeconfig: Path, state_dir: Path, token: str, n: int) -> Proc:
    """The agent as its Deployment runs it: token from the environment, state in the Secret."""
    env = {"TETHER_AGENT_TOKEN": token, "TETHER_AGENT_STATE_SECRET": STATE_SECRET_REF}
    return kube_agent(stack, kubeconfig, state_dir, name=f"agent-pod-{n}", env=env)


def secret_files(api: KubeApi) -> dict[str, bytes]:
    secret = api.get("Secret", manifests.STATE_SECRET, manifests.NAMESPACE) or {}
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


async def test_rescheduled_pod_reconnects_as_the_same_agent(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tmp_path: Path
) -> None:
    info = await stack.connect_cluster("kube-state")
    # A state Secret left by another test would be restored first: start from the manifests' empty one.
    admin_api.delete("Secret", manifests.STATE_SECRET, manifests.NAMESPACE)
    kubeconfig = install(control_plane, admin_api, info["manifests"], tmp_path / "agent-kubeconfig")
    assert secret_files(admin_api) == {}

    first = pod(stack, kubeconfig, tmp_path / "pod-1", info["token"], 1)
    await stack.wait_online("kube-state", timeout=30)

    def mirrored() -> dict[str, bytes] | None:
        files = secret_files(admin_api)
        return files if set(files) == set(STATE_FILES) else None

    saved = await wait_for(mirrored, timeout=30, what="every identity file in the state Secret")
    for name in STATE_FILES:
        assert saved[name] == (tmp_path / "pod-1" / name).read_bytes(), name
    assert b"NKEY SEED" in saved[NATS_CREDS_FILE]

    first.stop()
    await stack.wait_online("kube-state", online=False, timeout=20)
    # Rescheduled: a new, empty emptyDir; the same (spent) token in the environment.
    second = pod(stack, kubeconfig, tmp_path / "pod-2", info["token"], 2)
    await stack.wait_online("kube-state", timeout=30)
    assert second.running, second.output()
    for name in STATE_FILES:
        assert (tmp_path / "pod-2" / name).read_bytes() == saved[name], f"{name} is not the same agent's"
        assert (tmp_path / "pod-2" / name).stat().st_mode & 0o077 == 0
    assert "restored nats.creds" in second.output()
    assert "connect token is not needed" in second.output(), "it did not need its spent token"
    second.stop()
