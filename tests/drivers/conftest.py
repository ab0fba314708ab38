"""One driver contract, two drivers: ``sim`` (in memory, on a state dir) and ``kube`` (a real kube-apiserver,
the rig of ``tests/kube``). A driver fixture gives a fresh driver and a project name of its own, so the kube
variant's tests never see each other's namespaces on the shared API server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.drivers import Driver
from agent.drivers.kube import KubeDriver
from agent.drivers.sim import APPLY_DELAY_ENV, FAIL_ENV, UID_ENV, SimCluster
from agent.settings import AgentSettings
from tests.kube.conftest import admin_api, control_plane, kube_bin, kubeconfig  # noqa: F401  (shared fixtures)


@dataclass(frozen=True)
class Subject:
    """A driver under test and the project its tests may use alone."""

    driver: Driver
    project: str


@pytest.fixture(params=["sim", pytest.param("kube", marks=pytest.mark.kube)])
async def subject(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Subject]:
    for knob in (UID_ENV, APPLY_DELAY_ENV, FAIL_ENV):
        monkeypatch.delenv(knob, raising=False)
    project = f"p{uuid.uuid4().hex[:8]}"
    driver: Driver
    if request.param == "sim":
        driver = SimCluster(tmp_path / "sim")
    else:
        config = request.getfixturevalue("kubeconfig")
        driver = KubeDriver(AgentSettings(driver="kube", kubeconfig=config, state_dir=tmp_path / "agent"), environ={})
    try:
        yield Subject(driver=driver, project=project)
    finally:
        await driver.close()
