"""The kube driver's tenant status reads the tenant's kubeconfig Secret, which the tenant's control plane writes:
it passes the gateway's hostile-kubeconfig checks (``agent.gateway_tenant.parse_kubeconfig``) before the
kubernetes client's loader sees anything, so an exec plugin never runs, a file path is never read, and a server
other than the tenant's own is never called; each refusal is logged once, and the tenant's status says why."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.drivers import vcluster
from agent.drivers.kube import KubeApi
from agent.drivers.kube_objects import LABEL_KIND, LABEL_MANAGED_BY, LABEL_NAME, LABEL_PROJECT, namespace_name
from agent.drivers.kube_tenants import TenantRuntime
from agent.errors import DriverError
from agent.gateway_tenant import TENANT_HOSTS_ENV
from agent.gateway_upstream import Upstream

NS = namespace_name("tenant", "eng", "t1")
HOST = "https://10.96.0.1:443"
OWN = f"https://{vcluster.NAME}.{NS}.svc:443"
CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kubeconfig(server: str = OWN, cluster: dict[str, Any] | None = None, **user: Any) -> dict[str, Any]:

    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority-data": b64(CA), **(cluster or {})}}
        ],
        "users": [{"name": "u", "user": user or {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


class Host:
    """The host cluster as the runtime reads it: one tenant namespace, its Ready control plane, its Secret."""

    host = HOST

    def __init__(self, config: dict[str, Any] | bytes) -> None:
        raw = config if isinstance(config, bytes) else yaml.safe_dump(config).encode()
        self.secret = {"data": {vcluster.KUBECONFIG_KEY: base64.b64encode(raw).decode()}}

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        assert (kind, name, namespace) == ("Secret", vcluster.KUBECONFIG_SECRET, NS)
        return self.secret

    def list(self, kind: str, namespace: str | None = None, *, selector: str = "") -> list[dict[str, Any]]:
        if kind == "Namespace":
            labels = {LABEL_MANAGED_BY: "tether", LABEL_KIND: "tenant", LABEL_PROJECT: "eng", LABEL_NAME: "t1"}
            return [{"metadata": {"name": NS, "labels": labels, "annotations": {}}}]
        if kind == "Pod" and selector == "app=vcluster":
            status = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
            return [{"metadata": {"name": vcluster.POD_NAME, "namespace": NS, "uid": "u1"}, "status": status}]
        return []

    def apply(self, obj: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("nothing is applied on the host")

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        raise AssertionError("nothing is deleted on the host")

    def patch_merge(self, kind: str, name: str, patch: Mapping[str, Any], namespace: str | None = None) -> Any:
        raise AssertionError("nothing is patched on the host")

    def get_text(self, path: str, *, what: str = "") -> str:
        raise AssertionError("the host is never asked for a tenant's /readyz")

    def close(self) -> None:
        pass


class Tenant:
    """The client the connect seam hands back: a tenant that does not answer (nothing listens in a unit test)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def get_text(self, path: str, *, what: str = "") -> str:
        raise DriverError(f"{self.url} does not answer here")

    def close(self) -> None:
        pass


def runtime(host: Host, environ: dict[str, str] | None = None, made: list[Upstream] | None = None) -> TenantRuntime:
    def connect(upstream: Upstream) -> Any:
        if made is not None:
            made.append(upstream)
        # The real loader, with what passed the checks: if a hostile file got this far, its exec plugin would run.
        KubeApi.from_upstream(upstream).close()
        return Tenant(upstream.url)

    return TenantRuntime(host, connect, HOST, environ or {})


def hostile(marker: Path) -> list[tuple[str, dict[str, Any] | bytes, str]]:
    run = {"apiVersion": "client.authentication.k8s.io/v1", "command": "touch", "args": [str(marker)]}
    return [
        ("an exec plugin", kubeconfig(exec=run), "exec"),
        ("a token file", kubeconfig(tokenFile="/var/run/secrets/kubernetes.io/serviceaccount/token"), "tokenFile"),
        (
            "a client certificate path",
            kubeconfig(**{"client-certificate": "/etc/x.crt", "client-key": "/etc/x.key"}),
            "client-certificate",
        ),
        (
            "a CA path",
            kubeconfig(cluster={"certificate-authority": "/etc/kubernetes/pki/ca.crt"}),
            "certificate-authority",
        ),
        ("an auth provider", kubeconfig(**{"auth-provider": {"name": "oidc", "config": {}}}), "auth-provider"),
        ("a proxy", kubeconfig(cluster={"proxy-url": "http://attacker:3128"}), "proxy-url"),
        ("the host's API server", kubeconfig(server=HOST), "host cluster's API server"),
        ("kubernetes.default", kubeconfig(server="https://kubernetes.default.svc"), "host cluster's API server"),
        ("another tenant's Service", kubeconfig(server=f"https://{vcluster.NAME}.tether-other.svc"), "not the tenant"),
        ("a metadata service", kubeconfig(server="https://169.254.169.254"), "not the tenant's own Service"),
        ("plain HTTP", kubeconfig(server=f"http://{vcluster.NAME}.{NS}.svc"), "not HTTPS"),
        ("garbage", b"\x00\xff{[", "usable kubeconfig"),
        ("a huge file", b"a: " + b"x" * (300 * 1024), "larger than"),
    ]


def test_what_vcluster_writes_reaches_the_real_loader_rebuilt_from_inline_data(tmp_path: Path) -> None:
    made: list[Upstream] = []
    status = runtime(Host(kubeconfig()), made=made).statuses()[0]
    # The real loader made a client of the checked upstream (the unreachable tenant is never called here).
    assert [u.url for u in made] == [OWN] and made[0].authorization == "Bearer t0ken" and made[0].ca_data == CA
    assert (status.reason, status.message) == ("TenantAPINotReady", f"the tenant's API: {OWN} does not answer here")
    allowed = runtime(Host(kubeconfig(server="https://127.0.0.1:6443")), {TENANT_HOSTS_ENV: "127.0.0.1"}, made)
    assert allowed.statuses()[0].reason == "TenantAPINotReady"
    assert made[-1].url == "https://127.0.0.1:6443", "a host the operator allowed"


@pytest.mark.parametrize("case", range(13))
def test_a_hostile_kubeconfig_is_refused_with_a_log_line_and_never_loaded(
    case: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "exec-ran"
    what, config, why = hostile(marker)[case]
    made: list[Upstream] = []
    rt = runtime(Host(config), made=made)
    with caplog.at_level(logging.WARNING, logger="agent.drivers.kube_tenants"):
        first = rt.statuses()[0]
        again = rt.statuses()[0]
    assert not made, f"{what}: the kubernetes client's loader was handed it"
    assert not marker.exists(), f"{what}: its exec plugin ran"
    for status in (first, again):
        assert (status.settled, status.reason) == (False, "KubeconfigInvalid"), (what, status)
        assert why in status.message, (what, status.message)
    refusals = [r.getMessage() for r in caplog.records if "refused a tenant's kubeconfig" in r.getMessage()]
    assert len(refusals) == 1 and why in refusals[0] and NS in refusals[0], (what, refusals)


def test_the_list_of_hostile_cases_is_what_the_parametrization_covers(tmp_path: Path) -> None:
    assert len(hostile(tmp_path / "m")) == 13
