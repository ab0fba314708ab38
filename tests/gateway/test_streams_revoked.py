"""Open streams end with the access that opened them: real kubectl, platform, agent (kube driver), kube-apiserver
and kwok's fake kubelet. A member removed from the project loses their open exec, watch and port-forward at once;
another member's watch goes on until that member's own access ends (their user disabled)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from tests.gateway.test_streams_kubectl import space_with_shell
from tests.gateway.test_streams_portforward import first_line, open_streams, stop_kubectl
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane

pytestmark = pytest.mark.kube

ENDS_WITHIN = 10.0
"""Seconds an open stream may take to end after its member's access did (the periodic check is 60 s: not that)."""


async def _ended(proc: asyncio.subprocess.Process, what: str) -> str:
    """``proc`` has exited within ``ENDS_WITHIN``; what it printed on stderr."""
    try:
        await asyncio.wait_for(proc.wait(), ENDS_WITHIN)
    except TimeoutError:
        raise AssertionError(f"{what} still open {ENDS_WITHIN:g}s after the member's access ended") from None
    assert proc.stderr is not None
    return (await proc.stderr.read()).decode()


async def test_open_streams_end_when_their_members_access_does(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, kubeconfig: Path, tmp_path: Path
) -> None:
    kb, kc, _bob = await space_with_shell(stack, kubeconfig, tmp_path, "kube-rv", "rv")
    streams = await open_streams(kb, sleep=120)
    carol_watching = await kc.spawn("get", "pods", "--watch", "-o", "name")
    try:
        await first_line(carol_watching, b"pod/shell")

        # bob leaves the project: everything bob has open ends, with the reason where kubectl can show one.
        await stack.ok("DELETE", "/api/v1/projects/rv/members/user/bob")
        err = await _ended(streams.execing, "bob's kubectl exec")
        assert streams.execing.returncode != 0, "an exec cut short is not a success"
        assert "bob" in err and "not a member" in err, f"kubectl exec says why it ended: {err!r}"
        await _ended(streams.watching, "bob's kubectl get --watch")
        # kubectl port-forward keeps listening after its tunnel ended; the connection through it is closed.
        assert await asyncio.wait_for(streams.reader.read(), ENDS_WITHIN) == b"", (
            "bob's forwarded connection stayed open"
        )
        refused = await kb.refused("get", "pods")
        assert "bob" in refused and "forbidden" in refused.lower(), refused

        # Each stream's end is in the audit trail, with what it was and why.
        async def ends_audited() -> list[str]:
            trail = (await stack.ok("GET", "/api/v1/audit?user=bob&since=1h"))["items"]
            ended = [r for r in trail if r["result"].startswith("ended:") and "not a member" in r["result"]]
            return sorted(r["action"].rsplit("/", 1)[-1] for r in ended) if len(ended) >= 3 else []

        assert await wait_for(ends_audited, timeout=10, what="the streams' ends in the audit trail") == [
            "exec",
            "pods",
            "portforward",
        ]

        # carol is still a member: her watch goes on, until her own access ends (her user disabled).
        assert carol_watching.returncode is None, "another member's watch ended with bob's access"
        await stack.ok("POST", "/api/v1/users/carol/disable")
        await _ended(carol_watching, "carol's kubectl get --watch")
        assert "must be logged in" in await kc.refused("get", "pods")
    finally:
        await streams.stop()
        if carol_watching.returncode is None:
            await stop_kubectl(carol_watching)
