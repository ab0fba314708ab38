"""The sim driver: a stable identity, and health computed from its nodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import VERSION
from agent.drivers import Driver, make_driver
from agent.drivers.sim import KUBERNETES_VERSION, STATE_FILE, UID_ENV, GiB, SimCluster
from agent.errors import DriverError
from agent.settings import AgentSettings


@pytest.fixture(autouse=True)
def _no_uid_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(UID_ENV, raising=False)


async def test_uid_is_stable_across_instances_on_one_state_dir(tmp_path: Path) -> None:
    first = await SimCluster(tmp_path).cluster_uid()
    second = await SimCluster(tmp_path).cluster_uid()
    assert first == second
    assert json.loads((tmp_path / STATE_FILE).read_text())["cluster_uid"] == first
    assert (tmp_path / STATE_FILE).stat().st_mode & 0o777 == 0o600


async def test_uid_differs_between_state_dirs(tmp_path: Path) -> None:
    a = await SimCluster(tmp_path / "a").cluster_uid()
    b = await SimCluster(tmp_path / "b").cluster_uid()
    assert a != b


async def test_env_overrides_uid_and_is_not_persisted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    own = await SimCluster(tmp_path).cluster_uid()
    monkeypatch.setenv(UID_ENV, "shared-uid-1")
    assert await SimCluster(tmp_path).cluster_uid() == "shared-uid-1"
    monkeypatch.delenv(UID_ENV)
    assert await SimCluster(tmp_path).cluster_uid() == own


async def test_explicit_uid_beats_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(UID_ENV, "from-env")
    assert await SimCluster(tmp_path, cluster_uid="from-settings").cluster_uid() == "from-settings"
    settings = AgentSettings(server="nats://x", state_dir=tmp_path, sim_cluster_uid="from-settings")
    assert await SimCluster.from_settings(settings).cluster_uid() == "from-settings"


def test_invalid_uid_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="invalid simulated cluster UID"):
        SimCluster(tmp_path, cluster_uid="no spaces.or.dots")


def test_damaged_state_file_is_refused_not_replaced(tmp_path: Path) -> None:
    (tmp_path / STATE_FILE).write_text("{not json")
    with pytest.raises(DriverError, match="not valid JSON"):
        SimCluster(tmp_path)
    assert (tmp_path / STATE_FILE).read_text() == "{not json"


async def test_health_of_a_default_cluster(tmp_path: Path) -> None:
    sim = SimCluster(tmp_path)
    health = await sim.health()
    assert health.nodes_ready == health.nodes_total == 3
    assert health.capacity.cpu == 12.0
    assert health.capacity.memory == 3 * 16 * GiB
    assert health.kubernetes_version == KUBERNETES_VERSION == "v1.36.0-sim"
    assert health.agent_version == VERSION
    assert health.driver == "sim"
    assert health.api_reachable


async def test_node_not_ready_lowers_ready_count_and_capacity(tmp_path: Path) -> None:
    sim = SimCluster(tmp_path, nodes=4, cpu_per_node=2.0, memory_per_node=8 * GiB)
    sim.mark_node_not_ready("sim-node-2")
    health = await sim.health()
    assert (health.nodes_ready, health.nodes_total) == (3, 4)
    assert health.capacity.cpu == 6.0
    assert health.capacity.memory == 24 * GiB
    sim.set_node_ready("sim-node-2")
    assert (await sim.health()).nodes_ready == 4


def test_unknown_node_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DriverError, match="no node 'sim-node-9'"):
        SimCluster(tmp_path).mark_node_not_ready("sim-node-9")


async def test_closed_cluster_reports_an_error(tmp_path: Path) -> None:
    sim = SimCluster(tmp_path)
    await sim.close()
    await sim.close()
    with pytest.raises(DriverError):
        await sim.health()


def test_make_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    driver = make_driver(AgentSettings(server="nats://x", state_dir=tmp_path, sim_nodes=5))
    assert isinstance(driver, SimCluster)
    assert isinstance(driver, Driver)
    assert len(driver.nodes) == 5
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(DriverError, match="no usable Kubernetes configuration"):
        make_driver(AgentSettings(server="nats://x", state_dir=tmp_path, driver="kube"))
