"""Kubernetes gateway figures beside the same calls made directly to the same kube-apiserver, same run.

``python -m tests.bench.gateway [--requests 300] [--objects 5000] [--watches 1000] [--json out.json]``
(``make bench-gateway``): starts a kube-apiserver with kwok (tests/kube rig), a platform with HTTPS,
a kube agent, a space and a pod in it, then prints, each direct (the admin impersonating the member)
and through the gateway (the member, through the API, NATS and the agent):

- small GET latency p50/p99;
- a list of ``--objects`` ConfigMaps (1.6 KiB each): time and MB/s;
- ``--watches`` concurrent watches through one API process and one agent: event delivery p50/p99
  (write sent -> event read by each watch; the bench client reads them all) and the API's and agent's
  memory per watch;
- stream throughput: ``exec head -c 64M /dev/zero`` over WebSocket (v5.channel.k8s.io), MB/s.

Not a test: figures only (the machine's other load shows in them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from agent.drivers.kube import KubeApi
from tests.gateway.conftest import HttpsStack, kube_agent
from tests.kube.cluster import ControlPlane, build_binaries

NS = "tether-bp-s1"
THROUGH = "/kubernetes/project/bp/space/s1"
STREAM_BYTES = 64 * 1024 * 1024


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Side:
    """One way to the API server: direct, or through the gateway."""

    def __init__(self, name: str, base: str, headers: dict[str, str], verify: ssl.SSLContext) -> None:
        self.name = name
        self.base = base
        self.headers = headers
        self.verify = verify

    def client(self, connections: int = 10) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(
            base_url=self.base, headers=self.headers, verify=self.verify, timeout=60, limits=limits
        )


async def get_latency(side: Side, n: int) -> dict[str, float]:
    path = f"/api/v1/namespaces/{NS}/configmaps/tick"
    out = []
    async with side.client() as http:
        for i in range(n + 20):
            began = time.perf_counter()
            resp = await http.get(path)
            if i >= 20:  # warm-up
                out.append((time.perf_counter() - began) * 1000)
            assert resp.status_code == 200, resp.text
    return {"p50_ms": pct(out, 0.5), "p99_ms": pct(out, 0.99)}


async def list_time(side: Side) -> dict[str, float]:
    times, size = [], 0
    async with side.client() as http:
        for _ in range(5):
            began = time.perf_counter()
            resp = await http.get(f"/api/v1/namespaces/{NS}/configmaps")
            times.append(time.perf_counter() - began)
            assert resp.status_code == 200, resp.text
            size = len(resp.content)
    best = pct(times, 0.5)
    return {"median_ms": best * 1000, "mib": size / 2**20, "mb_s": size / 2**20 / best}


async def stream_rate(side: Side) -> dict[str, float]:
    query = "&".join(["command=head", "command=-c", f"command={STREAM_BYTES}", "command=/dev/zero", "stdout=true"])
    url = side.base.replace("https://", "wss://") + f"/api/v1/namespaces/{NS}/pods/shell/exec?{query}"
    rates, short = [], 0
    for _ in range(2):
        got = 0
        began = time.perf_counter()
        async with connect(
            url,
            additional_headers=side.headers,
            subprotocols=[Subprotocol("v5.channel.k8s.io")],
            ssl=side.verify,
            max_size=2**24,
            compression=None,
            proxy=None,
        ) as ws:
            async for message in ws:
                assert isinstance(message, bytes)
                if message[:1] == b"\x01":
                    got += len(message) - 1
                elif message[:1] == b"\x03":
                    break
        short = max(short, STREAM_BYTES - got)
        rates.append(got / 2**20 / (time.perf_counter() - began))
    return {"mb_s": max(rates), "short_bytes": short}


async def watches(side: Side, n: int, pids: dict[str, int], api: KubeApi) -> dict[str, float]:
    """``n`` watches on one ConfigMap; 5 updates; each watch's delay from the write's answer to its event."""
    rv = (api.get("ConfigMap", "tick", NS) or {})["metadata"]["resourceVersion"]
    sent: dict[str, float] = {}
    arrivals: list[tuple[str, float]] = []
    opened, progress = asyncio.Event(), asyncio.Event()
    target = [0]
    ready = 0
    path = f"/api/v1/namespaces/{NS}/configmaps?watch=1&fieldSelector=metadata.name%3Dtick&resourceVersion={rv}"
    before = {k: rss_kib(p) for k, p in pids.items()}

    async def one(http: httpx.AsyncClient) -> None:
        nonlocal ready
        async with http.stream("GET", path) as resp:
            assert resp.status_code == 200
            ready += 1
            if ready == n:
                opened.set()
            async for line in resp.aiter_lines():
                event = json.loads(line)
                tick = (event["object"].get("data") or {}).get("t", "")
                if tick:
                    arrivals.append((tick, time.perf_counter()))
                    if len(arrivals) >= target[0]:
                        progress.set()

    async with side.client(connections=n + 10) as http:
        tasks = [asyncio.create_task(one(http)) for _ in range(n)]
        await asyncio.wait_for(opened.wait(), 300)
        await asyncio.sleep(2)
        after = {k: rss_kib(p) for k, p in pids.items()}
        async with httpx.AsyncClient(base_url=side.base, headers=side.headers, verify=side.verify) as writer:
            for i in range(5):
                target[0] = n * (i + 1)
                progress.clear()
                body = {"data": {"t": str(i)}}
                sent[str(i)] = time.perf_counter()
                resp = await writer.patch(
                    f"/api/v1/namespaces/{NS}/configmaps/tick",
                    json=body,
                    headers={"Content-Type": "application/merge-patch+json"},
                )
                assert resp.status_code == 200, resp.text
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(progress.wait(), 30)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    # From the write's request (its own round trip included, the same on both sides) to each watch's event.
    delays = [(at - sent[tick]) * 1000 for tick, at in arrivals if tick in sent]
    out = {"p50_ms": pct(delays, 0.5), "p99_ms": pct(delays, 0.99), "delivered": len(delays) / (5 * n)}
    for k in pids:
        out[f"{k}_kib_per_watch"] = (after[k] - before[k]) / n
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="tether-gw-bench-"))
    cp = ControlPlane(bin_dir=build_binaries(), workdir=tmp / "kube")
    cp.start()
    # The per-member rate limit would refuse the bench's own bursts (1,000 watches at once).
    limits = {"TETHER_GATEWAY_RATE": "1000000", "TETHER_GATEWAY_BURST": "1000000"}
    stack = HttpsStack(tmp=tmp / "platform", env_overrides=limits)
    results: dict[str, Any] = {}
    try:
        await stack.start()
        info = await stack.connect_cluster("bench")
        agent = kube_agent(stack, cp.kubeconfig(), tmp / "agent", info["token"])
        await stack.wait_online("bench", timeout=30)
        await stack.ok("POST", "/api/v1/projects", json={"name": "bp", "clusters": ["bench"]})
        bob = await stack.user("bob")
        await stack.ok("PUT", "/api/v1/projects/bp/members", json={"user": "bob", "role": "user"})
        await stack.ok("POST", "/api/v1/projects/bp/spaces", token=bob, json={"name": "s1", "cluster": "bench"})
        await stack.wait_synced("space", "bp", "s1")
        verify = ssl.create_default_context(cafile=str(cp.ca_file))
        as_bob = {
            "Authorization": f"Bearer {cp.admin_token}",
            "Impersonate-User": "tether:user:bob",
            "Impersonate-Group": "system:authenticated",
        }
        direct = Side("direct", cp.url, as_bob, verify)
        gateway = Side(
            "gateway",
            stack.api + THROUGH,
            {"Authorization": f"Bearer {bob}"},
            ssl.create_default_context(cafile=str(stack.https.ca)),
        )
        await prepare(cp, args.objects)
        pids = {"api": stack.services["api"].proc.pid, "agent": agent.proc.pid}  # type: ignore[union-attr]
        assert cp.apiserver is not None
        api = KubeApi.from_kubeconfig(cp.kubeconfig())
        phases: dict[str, Callable[[Side], Awaitable[dict[str, float]]]] = {
            "get": lambda side: get_latency(side, args.requests),
            "list": list_time,
            "stream": stream_rate,
            "watch": lambda side: watches(side, args.watches, pids if side is gateway else direct_pids, api),
        }
        direct_pids = {"apiserver": cp.apiserver.pid}
        assert stack.nats is not None and stack.nats.proc is not None
        busy = {**pids, **direct_pids, "nats": stack.nats.proc.pid}
        try:
            for phase in args.only.split(","):
                results[phase] = {"direct": await phases[phase](direct)}
                with profiled(args.profile and f"{args.profile}/{phase}", pids):
                    cpu = {k: cpu_s(p) for k, p in busy.items()}
                    results[phase]["gateway"] = await phases[phase](gateway)
                    results[phase]["cpu_s"] = {k: round(cpu_s(p) - cpu[k], 2) for k, p in busy.items()}
        finally:
            api.close()
    finally:
        stack.stop()
        cp.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    return results


@contextlib.contextmanager
def profiled(where: str | None, pids: dict[str, int]) -> Iterator[None]:
    """With ``--profile DIR``: py-spy (if installed) samples the API and the agent meanwhile (collapsed stacks)."""
    if not where or shutil.which("py-spy") is None:
        yield
        return
    Path(where).mkdir(parents=True, exist_ok=True)
    procs = [
        subprocess.Popen(
            ["py-spy", "record", "--pid", str(pid), "--rate", "250", "--format", "raw", "-o", f"{where}/{name}.txt"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, pid in pids.items()
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGINT)
            proc.wait(30)


async def prepare(cp: ControlPlane, objects: int) -> None:
    """The ConfigMaps to list, the one watched (``tick``), and a Running pod to exec in."""
    headers = {"Authorization": f"Bearer {cp.admin_token}"}
    verify = ssl.create_default_context(cafile=str(cp.ca_file))
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=cp.url, headers=headers, verify=verify, timeout=60, limits=limits) as http:
        sem = asyncio.Semaphore(16)

        async def create(i: int) -> None:
            body = {"metadata": {"name": f"obj-{i:05d}"}, "data": {"b": "x" * 1600}}
            async with sem:
                resp = await http.post(f"/api/v1/namespaces/{NS}/configmaps", json=body)
                assert resp.status_code in (201, 409), resp.text

        await asyncio.gather(*(create(i) for i in range(objects - 1)))
        resp = await http.post(f"/api/v1/namespaces/{NS}/configmaps", json={"metadata": {"name": "tick"}})
        assert resp.status_code == 201, resp.text
        pod = {"metadata": {"name": "shell"}, "spec": {"containers": [{"name": "shell", "image": "bench/shell:1"}]}}
        resp = await http.post(f"/api/v1/namespaces/{NS}/pods", json=pod)
        assert resp.status_code == 201, resp.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            phase = (await http.get(f"/api/v1/namespaces/{NS}/pods/shell")).json().get("status", {}).get("phase")
            if phase == "Running":
                return
            await asyncio.sleep(0.5)
        raise RuntimeError("the bench pod never ran")


def report(r: dict[str, Any], args: argparse.Namespace) -> None:
    rows = []
    if g := r.get("get"):
        rows.append(
            (
                f"GET p50 / p99 ({args.requests} requests), ms",
                f"{g['direct']['p50_ms']:.2f} / {g['direct']['p99_ms']:.2f}",
                f"{g['gateway']['p50_ms']:.2f} / {g['gateway']['p99_ms']:.2f}",
                f"+{g['gateway']['p50_ms'] - g['direct']['p50_ms']:.2f} / "
                f"+{g['gateway']['p99_ms'] - g['direct']['p99_ms']:.2f} ms",
            )
        )
    if li := r.get("list"):
        rows.append(
            (
                f"list of {args.objects} objects ({li['direct']['mib']:.1f} MiB), median ms / MB/s",
                f"{li['direct']['median_ms']:.0f} / {li['direct']['mb_s']:.0f}",
                f"{li['gateway']['median_ms']:.0f} / {li['gateway']['mb_s']:.0f}",
                f"x{li['gateway']['median_ms'] / li['direct']['median_ms']:.2f} time",
            )
        )
    if w := r.get("watch"):
        rows.append(
            (
                f"{args.watches} watches: event delivery p50 / p99, ms",
                f"{w['direct']['p50_ms']:.1f} / {w['direct']['p99_ms']:.1f}",
                f"{w['gateway']['p50_ms']:.1f} / {w['gateway']['p99_ms']:.1f}",
                f"delivered {w['gateway']['delivered']:.0%}",
            )
        )
        rows.append(
            (
                "memory per watch, KiB",
                f"kube-apiserver {w['direct']['apiserver_kib_per_watch']:.1f}",
                f"api {w['gateway']['api_kib_per_watch']:.1f}, agent {w['gateway']['agent_kib_per_watch']:.1f}",
                "",
            )
        )
    if s := r.get("stream"):
        rows.append(
            (
                "exec stream (64 MiB stdout), MB/s",
                f"{s['direct']['mb_s']:.0f}",
                f"{s['gateway']['mb_s']:.0f}",
                f"{s['gateway']['mb_s'] / s['direct']['mb_s']:.0%} of direct"
                + (f", {s['gateway']['short_bytes']} bytes short" if s["gateway"]["short_bytes"] else ""),
            )
        )
    print(f"{'figure':58} {'direct':>18} {'gateway':>26}  overhead")
    for phase, figures in r.items():
        print(f"CPU seconds during the gateway's {phase}: {figures.get('cpu_s')}")
    for row in rows:
        print(f"{row[0]:58} {row[1]:>18} {row[2]:>26}  {row[3]}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--only", default="get,list,stream,watch", help="the figures to measure, in this order")
    parser.add_argument("--profile", help="a directory for py-spy profiles of the API and agent, per figure")
    asyncio.run(main(parser.parse_args()))
