"""Kubernetes gateway figures beside the same calls made directly to the same kube-apiserver, same run.

``python -m tests.bench.gateway [--requests 300]``: starts a kube-apiserver (tests/kube rig), a platform
with HTTPS, a kube agent and a space, then prints small-GET latency p50/p99 and the throughput of an
8 MiB list, direct (as the admin impersonating the member) and through the gateway (as the member).
Not a test: figures only (the machine's other load shows in them).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from agent.drivers.kube import KubeApi
from tests.gateway.conftest import HttpsStack, kube_agent
from tests.kube.cluster import ControlPlane, build_binaries


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


async def timed(http: httpx.AsyncClient, url: str, n: int, **kwargs: Any) -> list[float]:
    out = []
    for _ in range(n):
        began = time.perf_counter()
        resp = await http.get(url, **kwargs)
        out.append((time.perf_counter() - began) * 1000)
        assert resp.status_code == 200, resp.text
    return out


async def throughput(http: httpx.AsyncClient, url: str, **kwargs: Any) -> tuple[float, float]:
    best, size = 0.0, 0.0
    for _ in range(3):
        began = time.perf_counter()
        resp = await http.get(url, **kwargs)
        size = len(resp.content) / 2**20
        best = max(best, size / (time.perf_counter() - began))
    return best, size


async def main(requests: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="tether-gw-bench-"))
    cp = ControlPlane(bin_dir=build_binaries(), workdir=tmp / "kube")
    cp.start()
    stack = HttpsStack(tmp=tmp / "platform")
    try:
        await stack.start()
        info = await stack.connect_cluster("bench")
        kube_agent(stack, cp.kubeconfig(), tmp / "agent", info["token"])
        await stack.wait_online("bench", timeout=30)
        await stack.ok("POST", "/api/v1/projects", json={"name": "bp", "clusters": ["bench"]})
        bob = await stack.user("bob")
        await stack.ok("PUT", "/api/v1/projects/bp/members", json={"user": "bob", "role": "user"})
        await stack.ok("POST", "/api/v1/projects/bp/spaces", token=bob, json={"name": "s1", "cluster": "bench"})
        await stack.wait_synced("space", "bp", "s1")
        ns = "tether-bp-s1"
        path = f"/api/v1/namespaces/{ns}/configmaps"
        as_bob = {
            "Authorization": f"Bearer {cp.admin_token}",
            "Impersonate-User": "tether:user:bob",
            "Impersonate-Group": "system:authenticated",
        }
        verify = ssl.create_default_context(cafile=str(cp.ca_file))
        async with httpx.AsyncClient(verify=verify, timeout=30) as direct, stack.http(bob) as gateway:
            through = f"/kubernetes/project/bp/space/s1{path}"
            await timed(direct, cp.url + path, 20, headers=as_bob)
            await timed(gateway, through, 20)
            d = await timed(direct, cp.url + path, requests, headers=as_bob)
            g = await timed(gateway, through, requests)
            print(f"GET (empty list), {requests} requests, ms:")
            print(f"  direct  p50 {pct(d, 0.5):6.2f}  p99 {pct(d, 0.99):6.2f}")
            print(f"  gateway p50 {pct(g, 0.5):6.2f}  p99 {pct(g, 0.99):6.2f}")
            api = KubeApi.from_kubeconfig(cp.kubeconfig())
            try:
                for i in range(128):
                    blob = {"name": f"big-{i}", "namespace": ns}
                    api.create({"apiVersion": "v1", "kind": "ConfigMap", "metadata": blob, "data": {"b": "x" * 65536}})
            finally:
                api.close()
            rate_d, size = await throughput(direct, cp.url + path, headers=as_bob)
            rate_g, _ = await throughput(gateway, through)
            print(f"list of {size:.1f} MiB, best of 3: direct {rate_d:.1f} MB/s, gateway {rate_g:.1f} MB/s")
    finally:
        stack.stop()
        cp.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=300)
    asyncio.run(main(parser.parse_args().requests))
