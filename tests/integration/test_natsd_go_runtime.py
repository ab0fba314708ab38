"""The nats-server the platform launches gets the Go garbage collection settings it is configured with (real
nats-server): its collections stall commands in flight, so ``GOGC`` and ``GOMEMLIMIT`` are the platform's
settings (``NatsServerConfig.go_gc``, ``UpSettings.nats_go_gc``), and an operator's environment still wins."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform.natsd import NatsServer, NatsServerConfig, free_port
from services.platform.supervisor import Platform, UpSettings


def server_environment(server: NatsServer) -> dict[str, str]:
    assert server.proc is not None
    raw = Path(f"/proc/{server.proc.pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)


async def launched(config: NatsServerConfig, tmp_path: Path) -> dict[str, str]:
    server = NatsServer(config, conf_path=tmp_path / "nats.conf", log_path=tmp_path / "nats.log")
    server.start()
    try:
        await server.wait_ready()
        return server_environment(server)
    finally:
        server.stop()


def config(tmp_path: Path, **go: object) -> NatsServerConfig:
    return NatsServerConfig(store_dir=tmp_path / "js", port=free_port(), **go)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_go_settings_around(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.delenv("GOMEMLIMIT", raising=False)


async def test_the_configured_gc_target_and_memory_limit_reach_the_server(tmp_path: Path) -> None:
    env = await launched(config(tmp_path, go_gc=250, go_memory_limit="3GiB"), tmp_path)
    assert (env["GOGC"], env["GOMEMLIMIT"]) == ("250", "3GiB")


async def test_unset_leaves_gos_defaults(tmp_path: Path) -> None:
    env = await launched(config(tmp_path, go_gc=None, go_memory_limit=None), tmp_path)
    assert "GOGC" not in env and "GOMEMLIMIT" not in env


async def test_the_operators_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOGC", "150")
    monkeypatch.setenv("GOMEMLIMIT", "1GiB")
    env = await launched(config(tmp_path, go_gc=250, go_memory_limit="3GiB"), tmp_path)
    assert (env["GOGC"], env["GOMEMLIMIT"]) == ("150", "1GiB")


def test_tether_up_passes_its_settings_to_the_embedded_server(tmp_path: Path) -> None:
    settings = UpSettings(data_dir=tmp_path, nats_go_gc=300, nats_go_memory_limit="2GiB")
    nats = Platform(settings, say=lambda _line: None).nats.config
    assert (nats.go_gc, nats.go_memory_limit) == (300, "2GiB")
