"""The benchmark's profiles of nats-server's own CPU (``--nats-profile``) against a real nats-server: its Go
profiler answers on the configured port only, and a slice read back splits into activities."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import nats
import nats.aio.client
import pytest

from services.platform.natsd import NatsServer, NatsServerConfig, free_port
from tests.bench.natsprofile import SLICE_SECONDS, Slices, go_binary, split_files


async def test_a_slice_of_the_servers_cpu_is_taken_and_read(tmp_path: Path) -> None:
    port = free_port()
    config = NatsServerConfig(store_dir=tmp_path / "js", port=free_port(), profiling_port=port)
    server = NatsServer(config, conf_path=tmp_path / "nats.conf", log_path=tmp_path / "nats.log")
    server.start()
    try:
        await server.wait_ready()
        slices = Slices(port, tmp_path / "profiles", "busy")
        nc = await nats.connect(server.url)
        try:
            await nc.subscribe("load")
            # Messages through the server while the slice is taken, so it has samples to split.
            await asyncio.gather(slices.once(), publish_until(nc, time.monotonic() + SLICE_SECONDS))
        finally:
            await nc.close()
    finally:
        server.stop()
    assert slices.failures == 0
    assert len(slices.files) == 1
    assert slices.files[0].read_bytes()[:2] == b"\x1f\x8b"  # pprof's gzipped protocol buffer
    if go_binary() is None:
        pytest.skip("no Go toolchain to read the profile with (the kube binaries' builds need one)")
    split = split_files(slices.files)
    assert split is not None
    assert split.total > 0
    assert {"messages in (parsing, routing)", "socket reads"} & set(split.seconds), split.seconds


async def publish_until(nc: nats.aio.client.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        for _ in range(1000):
            await nc.publish("load", b"x" * 64)
        await nc.flush()


async def test_without_a_port_there_is_no_profiler(tmp_path: Path) -> None:
    config = NatsServerConfig(store_dir=tmp_path / "js", port=free_port())
    server = NatsServer(config, conf_path=tmp_path / "nats.conf", log_path=tmp_path / "nats.log")
    server.start()
    try:
        await server.wait_ready()
        assert "prof_port" not in (tmp_path / "nats.conf").read_text()
        async with httpx.AsyncClient(timeout=2) as http:
            resp = await http.get(f"http://127.0.0.1:{config.monitor_port}/debug/pprof/profile?seconds=1")
        assert resp.status_code == 404  # not on the monitoring port either
    finally:
        server.stop()
