"""Streams that behave, with real kubectl, platform, agent (kube driver), kube-apiserver and kwok's fake kubelet:
an exec's output arrives whole up to its last byte; a link that breaks ends open exec, port-forward and watch
streams at once (no hang) and kubectl works again after; a cluster whose agent is gone is a clear error at once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from tests.gateway.conftest import wait_gateway_served
from tests.gateway.test_streams_kubectl import space_with_shell
from tests.gateway.test_streams_portforward import echo_through, open_streams, port_forward, stop_kubectl
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube

ENDS_WITHIN = 20.0
"""Seconds an open stream may take to end after its link broke (the idle timeout is 35 s: not that)."""


async def _exited(proc: asyncio.subprocess.Process, timeout: float, what: str) -> int:
    try:
        return await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        raise AssertionError(f"{what} still open {timeout:g}s after its link broke") from None


async def test_exec_output_arrives_whole(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, _kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-tail", "tl")
    # The command writes 2 MiB and exits at once: the API server closes its WebSocket right behind the last
    # bytes, and everything written before that reaches kubectl (three times: any loss would be a race).
    for _ in range(3):
        out = await kb.ok("exec", "shell", "--", "sh", "-c", "head -c 2097152 /dev/zero | tr '\\0' y; echo; echo END")
        assert len(out) == 2 * 1024 * 1024 + 5 and out.endswith("y\nEND\n"), (len(out), out[-20:])


async def test_streams_end_when_the_link_breaks_and_work_again_after(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, _kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-rc", "rc")
    streams = await open_streams(kb, sleep=40)
    try:
        # NATS goes away and comes back: the agent and the API each lose what was in flight on the link.
        assert stack.nats is not None
        stack.nats.stop()
        stack.nats.start()
        await stack.nats.wait_ready()
        await _exited(streams.execing, ENDS_WITHIN, "kubectl exec")
        await _exited(streams.watching, ENDS_WITHIN, "kubectl get --watch")
        # kubectl port-forward keeps listening after its tunnel ended; the connection through it is closed.
        assert await asyncio.wait_for(streams.reader.read(), ENDS_WITHIN) == b"", "the forwarded connection stayed open"
    finally:
        await streams.stop()

    # Everything works again once the agent serves its gateway again.
    await wait_gateway_served(stack, "kube-rc")

    async def exec_works() -> bool:
        code, out, _err = await kb.run("exec", "shell", "--", "echo", "back")
        return code == 0 and out == "back\n"

    await wait_for(exec_works, timeout=30, what="kubectl exec to work again after the link came back")
    proc, port = await port_forward(kb)
    try:
        assert await echo_through(port, b"again\n") == b"again\n"
    finally:
        await stop_kubectl(proc)


async def test_a_cluster_whose_agent_is_gone_is_a_clear_error_at_once(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, _kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-off", "of")
    await wait_gateway_served(stack, "kube-off")
    agent = stack.agents[-1]
    agent.kill9()  # gone without a word: the cluster still shows online for up to its detection budget
    loop = asyncio.get_running_loop()
    for args in (("exec", "shell", "--", "true"), ("port-forward", "pod/shell", ":8080"), ("get", "pods")):
        began = loop.time()
        err = await kb.refused(*args)
        took = loop.time() - began
        assert "kube-off" in err and "offline" in err, err
        assert took < 10, f"kubectl {args[0]} took {took:.1f}s to be told the cluster is offline"
