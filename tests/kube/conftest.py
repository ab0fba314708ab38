"""Fixtures of the ``kube`` tests: one real etcd + kube-apiserver for the whole session.

The binaries come from ``tests/tools/kubebin/build.sh`` (built once per machine,
cached). Without a Go toolchain (exit 3) the tests are skipped locally, but in
CI (``CI=true``) that is a failure: there they must run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi, KubeDriver
from agent.settings import AgentSettings
from tests.kube.cluster import ControlPlane, KubeBinUnavailable, build_binaries, unavailable
from tests.kube.helpers import TENANT_HOSTS


@pytest.fixture(scope="session")
def kube_bin() -> Path:
    try:
        return build_binaries()
    except KubeBinUnavailable as exc:
        unavailable("kube-apiserver and etcd", exc)


@pytest.fixture(scope="session")
def control_plane(kube_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(bin_dir=kube_bin, workdir=tmp_path_factory.mktemp("kube"))
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def tenant_api_server(kube_bin: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second, bare API server standing in for a tenant's own (under kwok the vCluster never really runs):
    tests write its kubeconfig into the tenant's Secret ``vc-vcluster``, where vCluster would write its own."""
    cp = ControlPlane(bin_dir=kube_bin, workdir=tmp_path_factory.mktemp("tenant-api"), with_workers=False)
    cp.start()
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def kubeconfig(control_plane: ControlPlane) -> Path:
    return control_plane.kubeconfig()


@pytest.fixture
def admin_api(kubeconfig: Path) -> Iterator[KubeApi]:
    """The cluster as its administrator (for checking and for setting up what tests need)."""
    api = KubeApi.from_kubeconfig(kubeconfig)
    yield api
    api.close()


@pytest.fixture
async def driver(kubeconfig: Path, tmp_path: Path) -> AsyncIterator[KubeDriver]:
    d = KubeDriver(
        AgentSettings(driver="kube", kubeconfig=kubeconfig, state_dir=tmp_path / "agent"), environ=TENANT_HOSTS
    )
    yield d
    await d.close()
