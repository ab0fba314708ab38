"""port-forward through the platform: real kubectl (WebSocket-tunnelled SPDY, ``SPDY/3.1+portforward.k8s.io``),
platform, agent (kube driver), kube-apiserver and kwok's fake kubelet, which connects every forwarded port to
``cat`` (an echo)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from tests.gateway.conftest import Kubectl
from tests.gateway.test_streams_kubectl import space_with_shell
from tests.harness import Stack
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube

FORWARDING = re.compile(rb"Forwarding from 127\.0\.0\.1:(\d+) -> 8080")


async def port_forward(kubectl: Kubectl) -> tuple[asyncio.subprocess.Process, int]:
    """``kubectl port-forward pod/shell :8080`` running, and the local port it listens on."""
    proc = await kubectl.spawn("port-forward", "pod/shell", ":8080")
    assert proc.stdout is not None and proc.stderr is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    except TimeoutError:
        line = b""
    found = FORWARDING.search(line)
    if found is None:
        await stop_kubectl(proc)
        err = await proc.stderr.read()
        raise AssertionError(f"kubectl port-forward did not start: {line!r} {err.decode()}")
    return proc, int(found.group(1))


async def stop_kubectl(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def echo_through(port: int, data: bytes) -> bytes:
    """``data`` sent to the forwarded port; what comes back (the pod's ``cat``), as much as was sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(data)), 30)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


@dataclass
class OpenStreams:
    """A member's exec (its command sleeping), watch of pods and port-forward, each serving, and one connection
    through the forwarded port (it echoed a line)."""

    execing: asyncio.subprocess.Process
    watching: asyncio.subprocess.Process
    forwarding: asyncio.subprocess.Process
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def stop(self) -> None:
        self.writer.close()
        for proc in (self.execing, self.watching, self.forwarding):
            if proc.returncode is None:
                await stop_kubectl(proc)


async def open_streams(kubectl: Kubectl, sleep: int) -> OpenStreams:
    """``kubectl``'s three kinds of stream on the pod ``shell``, each past its first answer."""
    execing = await kubectl.spawn("exec", "shell", "--", "sh", "-c", f"echo started; sleep {sleep}")
    watching = await kubectl.spawn("get", "pods", "--watch", "-o", "name")
    forwarding = await kubectl.spawn("port-forward", "pod/shell", ":8080")
    try:
        await first_line(execing, b"started")
        await first_line(watching, b"pod/shell")
        found = FORWARDING.search(await first_line(forwarding, b"Forwarding from"))
        assert found is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", int(found.group(1)))
        writer.write(b"before\n")
        assert await asyncio.wait_for(reader.readexactly(7), 10) == b"before\n"
    except BaseException:
        for proc in (execing, watching, forwarding):
            await stop_kubectl(proc)
        raise
    return OpenStreams(execing, watching, forwarding, reader, writer)


async def first_line(proc: asyncio.subprocess.Process, expected: bytes) -> bytes:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert expected in line, line
    return line


async def test_port_forward_through_the_gateway(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-pf", "pf")

    # --- a member forwards a port: bytes go through and back, twice over one kubectl -----------------
    proc, port = await port_forward(kb)
    try:
        assert await echo_through(port, b"echo me\n") == b"echo me\n"
        blob = os.urandom(256 * 1024)  # many WebSocket messages and SPDY data frames each way
        assert await echo_through(port, blob) == blob
    finally:
        await stop_kubectl(proc)

    # --- refusals, with their reasons --------------------------------------------------------------
    err = await kc.refused("port-forward", "pod/shell", ":8080")
    assert "forbidden" in err.lower() and "pods/portforward" in err and "tether:user:carol" in err, err
    dave = await stack.user("dave")
    outsider = Kubectl(kubeconfig=kb.kubeconfig, env={**kb.env, "TETHER_TOKEN": dave})
    err = await outsider.refused("port-forward", "pod/shell", ":8080")
    assert "not a member" in err and "dave" in err, err
    spdy_only = Kubectl(kubeconfig=kb.kubeconfig, env={**kb.env, "KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"})
    err = await spdy_only.refused("port-forward", "pod/shell", ":8080")
    assert "SPDY" in err and "kubectl 1.31 or newer" in err, err
