"""The agent takes from the platform's welcome how long to wait at most between hellos nobody answers, within
bounds: a fleet-sized wait from the registry, never one that would leave the agent asleep for minutes."""

from __future__ import annotations

from pathlib import Path

from agent.drivers.sim import SimCluster
from agent.health import HealthReader
from agent.identity.session import MAX_UNHEARD_BACKOFF, Session
from agent.settings import AgentSettings
from schemas.messages import AgentWelcome
from schemas.retrying import NOT_LISTENING_BACKOFF


def session(tmp_path: Path) -> Session:
    settings = AgentSettings(server="nats://127.0.0.1:1", token="", state_dir=tmp_path)
    return Session(settings, HealthReader(SimCluster(tmp_path / "sim")), cluster_uid="uid", driver="sim")


def welcome(unheard: float) -> AgentWelcome:
    return AgentWelcome(cluster="c1", heartbeat_interval=5.0, unheard_backoff=unheard)


def test_the_welcome_sets_the_unheard_backoff_within_bounds(tmp_path: Path) -> None:
    s = session(tmp_path)
    assert s.not_listening == NOT_LISTENING_BACKOFF
    s._welcomed(welcome(13.3))
    assert s.not_listening == (NOT_LISTENING_BACKOFF[0], 13.3)
    s._welcomed(welcome(MAX_UNHEARD_BACKOFF + 1))  # out of bounds: the last good one stays
    s._welcomed(welcome(0.01))
    assert s.not_listening == (NOT_LISTENING_BACKOFF[0], 13.3)


def test_an_older_registrys_welcome_leaves_the_default(tmp_path: Path) -> None:
    s = session(tmp_path)
    s._welcomed(AgentWelcome(cluster="c1", heartbeat_interval=5.0))
    assert s.not_listening == NOT_LISTENING_BACKOFF
