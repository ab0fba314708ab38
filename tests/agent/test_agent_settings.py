"""Agent settings, the state-directory lock and the CLI's argument handling (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.cli import _normalise, build_parser, settings_from_args
from agent.errors import PermanentError
from agent.settings import AgentSettings, cluster_of_token
from agent.statefiles import StateLock


def test_state_dir_defaults_to_xdg_state_home_and_token_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    settings = AgentSettings(server="nats://x", token="tct.edge-1.s3cret")
    assert settings.state_path == tmp_path / "tether" / "agents" / "edge-1"
    assert settings.token_cluster == "edge-1"


def test_explicit_state_dir_wins(tmp_path: Path) -> None:
    settings = AgentSettings(server="nats://x", token="tct.edge-1.s", state_dir=tmp_path)
    assert settings.state_path == tmp_path


def test_no_token_and_no_state_dir_is_an_error() -> None:
    with pytest.raises(PermanentError, match="no state directory and no connect token"):
        AgentSettings(server="nats://x")


@pytest.mark.parametrize("token", ["nope", "tac.edge-1.s", "tct.edge-1.", "tct.Edge_1.s", "tct.a.b.c"])
def test_malformed_tokens_are_refused(token: str) -> None:
    with pytest.raises(PermanentError):
        cluster_of_token(token)


def test_validation(tmp_path: Path) -> None:
    with pytest.raises(PermanentError, match="unknown driver"):
        AgentSettings(state_dir=tmp_path, driver="docker")  # type: ignore[arg-type]
    with pytest.raises(PermanentError, match="heartbeat interval"):
        AgentSettings(state_dir=tmp_path, heartbeat_interval=0)


def test_servers_and_repr(tmp_path: Path) -> None:
    settings = AgentSettings(server=" nats://a:4222 , nats://b:4222,", token="tct.edge-1.hidden", state_dir=tmp_path)
    assert settings.servers == ["nats://a:4222", "nats://b:4222"]
    assert "hidden" not in repr(settings)


def test_state_lock_is_exclusive(tmp_path: Path) -> None:
    first, second = StateLock(tmp_path), StateLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(PermanentError, match="already running"):
            second.acquire()
    finally:
        first.release()
    second.acquire()
    second.release()
    second.release()


def test_run_is_the_default_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "TETHER_AGENT_SERVER",
        "TETHER_AGENT_TOKEN",
        "TETHER_AGENT_DRIVER",
        "TETHER_AGENT_STATE_DIR",
    ):
        monkeypatch.delenv(name, raising=False)
    assert _normalise(["--server", "nats://x"]) == ["run", "--server", "nats://x"]
    assert _normalise([]) == ["run"]
    assert _normalise(["run", "--server", "nats://x"]) == ["run", "--server", "nats://x"]
    assert _normalise(["--help"]) == ["--help"]
    args = build_parser().parse_args(
        _normalise(["--server", "nats://x", "--state-dir", str(tmp_path), "--heartbeat-interval", "2"])
    )
    settings = settings_from_args(args)
    assert (settings.server, settings.state_path, settings.heartbeat_interval) == ("nats://x", tmp_path, 2.0)
    assert settings.driver == "sim"


def test_inventory_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert AgentSettings(state_dir=tmp_path).inventory_interval == 120.0
    with pytest.raises(PermanentError, match="inventory interval"):
        AgentSettings(state_dir=tmp_path, inventory_interval=0)
    base = ["--server", "nats://x", "--state-dir", str(tmp_path)]
    monkeypatch.delenv("TETHER_INVENTORY_INTERVAL", raising=False)
    assert settings_from_args(build_parser().parse_args(_normalise(base))).inventory_interval == 120.0
    monkeypatch.setenv("TETHER_INVENTORY_INTERVAL", "30")
    assert settings_from_args(build_parser().parse_args(_normalise(base))).inventory_interval == 30.0
    args = build_parser().parse_args(_normalise([*base, "--inventory-interval", "7"]))
    assert settings_from_args(args).inventory_interval == 7.0
    monkeypatch.setenv("TETHER_INVENTORY_INTERVAL", "0")
    with pytest.raises(PermanentError, match="inventory interval"):
        settings_from_args(build_parser().parse_args(_normalise(base)))
