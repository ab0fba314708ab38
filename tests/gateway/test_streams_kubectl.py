"""exec and cp through the platform: real kubectl, platform, agent (kube driver), kube-apiserver and kwok's
fake kubelet (which runs exec commands in the rig's ``kwok`` directory). port-forward: test_streams_portforward.py."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
from pathlib import Path
from urllib.parse import urlencode

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import namespace_name
from tests.gateway.conftest import HttpsStack, Kubectl, kube_agent, member_kubectl
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube


async def space_with_shell(
    stack: Stack, kubeconfig: Path, tmp_path: Path, cluster: str, project: str
) -> tuple[Kubectl, Kubectl, str]:
    """A space with a Running pod ``shell``; kubectl as its owner (bob) and as a viewer (carol)."""
    info = await stack.connect_cluster(cluster)
    kube_agent(stack, kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online(cluster, timeout=30)
    await stack.ok("POST", "/api/v1/projects", json={"name": project, "clusters": [cluster]})
    bob, carol = await stack.user("bob"), await stack.user("carol")
    await stack.ok("PUT", f"/api/v1/projects/{project}/members", json={"user": "bob", "role": "user"})
    await stack.ok("PUT", f"/api/v1/projects/{project}/members", json={"user": "carol", "role": "viewer"})
    await stack.ok("POST", f"/api/v1/projects/{project}/spaces", token=bob, json={"name": "s1", "cluster": cluster})
    await stack.wait_synced("space", project, "s1")
    kb = await member_kubectl(stack, bob, "space", project, "s1", tmp_path / "bob")
    kc = await member_kubectl(stack, carol, "space", project, "s1", tmp_path / "carol")
    await kb.ok("run", "shell", "--image=registry.local/shell:1", "--restart=Never")

    async def running() -> bool:
        return "Running" in await kb.ok("get", "pod", "shell", "-o", "jsonpath={.status.phase}")

    await wait_for(running, timeout=60, what="the member's pod Running")
    return kb, kc, bob


async def test_exec_and_cp_through_the_gateway(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-s1", "st")

    # --- exec, without and with stdin ------------------------------------------------------------
    assert await kb.ok("exec", "shell", "--", "sh", "-c", "echo hello; echo to-stderr >&2") == "hello\n"
    code, out, err = await kb.run("exec", "shell", "--", "sh", "-c", "exit 3")
    # kwok's fake kubelet reports a failed command as an error naming its status (a kubelet: exit code 3).
    assert code != 0 and "exit status 3" in err, f"the command's status comes back through the tunnel: {err}"
    # One line read: kwok's exec does not pass the end of stdin on to the command.
    out = await kb.ok("exec", "-i", "shell", "--", "sh", "-c", "head -n1; echo done", stdin=b"piped in\n")
    assert out == "piped in\ndone\n"

    # --- cp out of the pod (exec of tar): 3 MiB, many frames and credit rounds, intact -------------
    blob = os.urandom(3 * 1024 * 1024)
    name = f"cp-{os.getpid()}.bin"
    (control_plane.workdir / "kwok" / name).write_bytes(blob)
    try:
        local = tmp_path / "copied.bin"
        await kb.ok("cp", f"shell:{name}", str(local))
        assert hashlib.sha256(local.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
    finally:
        (control_plane.workdir / "kwok" / name).unlink()

    # --- refusals with their reasons ---------------------------------------------------------------
    err = await kc.refused("exec", "shell", "--", "true")
    assert "forbidden" in err.lower() and "pods/exec" in err and "tether:user:carol" in err, err
    kb.env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"  # kubectl as an SPDY-only client
    err = await kb.refused("exec", "shell", "--", "true")
    kb.env.pop("KUBECTL_REMOTE_COMMAND_WEBSOCKETS")
    assert "SPDY" in err and "kubectl 1.31 or newer" in err, err
    trail = await stack.ok("GET", "/api/v1/audit", params={"user": "bob"})
    ns = namespace_name("space", "st", "s1")
    assert any(e["action"] == f"GET /api/v1/namespaces/{ns}/pods/shell/exec" for e in trail["items"])


async def _exec_ws(stack: HttpsStack, token: str, command: str) -> ClientConnection:
    """A WebSocket exec through the gateway, as kubectl opens it, from a client that reads only when told."""
    ns = namespace_name("space", "sl", "s1")
    query = urlencode([("command", "sh"), ("command", "-c"), ("command", command), ("stdout", "true")])
    url = f"wss://127.0.0.1:{stack.http_port}/kubernetes/project/sl/space/s1/api/v1/namespaces/{ns}/pods/shell/exec"
    return await connect(
        f"{url}?{query}",
        additional_headers={"Authorization": f"Bearer {token}"},
        subprotocols=[Subprotocol("v5.channel.k8s.io")],
        ssl=ssl.create_default_context(cafile=str(stack.https.ca)),
        max_queue=1,
        max_size=2**20,
        compression=None,
        proxy=None,
    )


async def test_a_slow_tunnel_holds_back_only_itself(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    assert isinstance(stack, HttpsStack)
    kb, _kc, bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-s2", "sl")
    # An endless stdout (``yes``) and a client that reads one message, then nothing for a while: far more is
    # offered than one window (1 MiB) plus every socket buffer on the way.
    slow = await _exec_ws(stack, bob, "yes | head -c 67108864")
    try:
        assert slow.subprotocol == "v5.channel.k8s.io"
        await slow.recv()
        loop = asyncio.get_running_loop()
        for _ in range(3):
            began = loop.time()
            assert await kb.ok("exec", "shell", "--", "echo", "other") == "other\n"
            assert loop.time() - began < 10, "a stalled tunnel held back another"
        # The slow reader reads at last: 16 MiB more arrive, intact and in order.
        got, tail = 0, b""
        async with asyncio.timeout(120):
            while got < 16 * 1024 * 1024:
                message = await slow.recv()
                assert isinstance(message, bytes) and message[:1] == b"\x01", message[:20]
                data = tail + message[1:]
                if got == 0 and data[:1] == b"\n":
                    data = data[1:]  # the message read first ended between a "y" and its newline
                whole = len(data) - len(data) % 2
                assert data[:whole] == b"y\n" * (whole // 2), "stdout arrived damaged or out of order"
                tail, got = data[whole:], got + len(message) - 1
    finally:
        await slow.close()

    # A client that goes away cancels the upstream exec: the agent ends the tunnel (it logs what it relayed).
    gone = await _exec_ws(stack, bob, "sleep 60")
    await gone.close()
    log = stack.tmp / "logs" / "agent-kube.log"

    async def tunnel_ended() -> bool:  # the 3 execs of "other", the slow one, and this one
        return log.read_text().count(" ended: ") >= 5

    await wait_for(tunnel_ended, timeout=20, what="the agent to end the exec whose client left")
