"""The kube tests' own plumbing: no Go means skip locally, fail in CI."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kube import cluster


def test_without_go_the_build_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GO", str(tmp_path / "no-go"))
    monkeypatch.setenv("TETHER_KUBE_BIN_DIR", str(tmp_path / "cache"))
    with pytest.raises(cluster.KubeBinUnavailable, match="Install Go"):
        cluster.build_binaries()
    with pytest.raises(cluster.KubeBinUnavailable, match="Install Go"):
        cluster.build_helm()


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_no_go_skips_locally_and_fails_in_ci(monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type) -> None:
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="no Go toolchain"):
        cluster.unavailable("kube-apiserver and etcd", cluster.KubeBinUnavailable("go not found"))
