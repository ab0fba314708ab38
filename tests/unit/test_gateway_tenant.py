"""The tenant's kubeconfig Secret is written from the tenant's namespace: what the gateway accepts of it."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import yaml

from agent.drivers.kube_objects import namespace_name
from agent.gateway_tenant import TENANT_HOSTS_ENV, TenantUnreachable, parse_kubeconfig, parse_secret
from agent.inventory import with_activity
from schemas.messages import InventoryItem

NS = namespace_name("tenant", "eng", "t1")
HOST = "https://10.96.0.1:443"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN EC PRIVATE KEY-----\nMHc\n-----END EC PRIVATE KEY-----\n"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def config(server: str = f"https://vcluster.{NS}.svc:443", **user: Any) -> dict[str, Any]:
    cluster: dict[str, Any] = {"server": server, "certificate-authority-data": b64(PEM)}
    creds = user or {"client-certificate-data": b64(PEM), "client-key-data": b64(KEY)}
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": creds}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }


def parse(cfg: dict[str, Any], environ: dict[str, str] | None = None) -> Any:
    return parse_kubeconfig(yaml.safe_dump(cfg).encode(), NS, HOST, environ or {})


def test_what_vcluster_writes_is_accepted() -> None:
    up = parse(config())
    assert up.url == f"https://vcluster.{NS}.svc:443"
    assert (up.ca_data, up.cert_data, up.key_data, up.authorization) == (PEM, PEM, KEY, "")
    assert parse(config(token="abc")).authorization == "Bearer abc"
    allowed = parse(config(server="https://127.0.0.1:6443"), {TENANT_HOSTS_ENV: "127.0.0.1"})
    assert allowed.url == "https://127.0.0.1:6443"


@pytest.mark.parametrize(
    ("cfg", "why"),
    [
        (config(server="https://kubernetes.default.svc"), "host cluster's API server"),
        (config(server=HOST), "host cluster's API server"),
        (config(server="https://10.96.0.1"), "host cluster's API server"),
        (config(server="https://vcluster.tether-other-ns.svc"), "not the tenant's own Service"),
        (config(server="https://169.254.169.254"), "not the tenant's own Service"),
        (config(server=f"http://vcluster.{NS}.svc"), "not HTTPS"),
        (config(tokenFile="/var/run/secrets/kubernetes.io/serviceaccount/token"), "tokenFile"),
        (config(exec={"command": "sh", "args": ["-c", "id"]}), "exec"),
        (config(**{"client-certificate": "/etc/agent.crt", "client-key": "/etc/agent.key"}), "client-certificate"),
        (config(**{"auth-provider": {"name": "gcp"}}), "auth-provider"),
        (config(username="a", password="b"), "no credentials"),
        (config(**{"client-certificate-data": b64("not pem"), "client-key-data": b64(KEY)}), "not PEM"),
        ({**config(), "current-context": "nope"}, "no context 'nope'"),
        ({**config(), "current-context": ""}, "no current-context"),
    ],
)
def test_hostile_kubeconfigs_are_refused(cfg: dict[str, Any], why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse(cfg, {TENANT_HOSTS_ENV: "10.96.0.1"})  # even allowed, the host's own address stays refused


def test_a_cluster_with_a_ca_path_or_no_verification_is_refused() -> None:
    for extra in ({"certificate-authority": "/etc/ca.pem"}, {"insecure-skip-tls-verify": True}):
        cfg = config()
        cfg["clusters"][0]["cluster"].update(extra)
        with pytest.raises(ValueError, match="only inline data"):
            parse(cfg)


def test_a_missing_or_broken_secret_says_why() -> None:
    with pytest.raises(TenantUnreachable, match="has not written its kubeconfig") as missing:
        parse_secret({"data": {}}, NS, HOST, "tenant cluster eng/t1")
    assert missing.value.status == 503
    with pytest.raises(TenantUnreachable, match="no usable kubeconfig") as broken:
        parse_secret({"data": {"config": "!!notbase64"}}, NS, HOST, "tenant cluster eng/t1")
    assert broken.value.status == 502
    with pytest.raises(TenantUnreachable, match="no usable kubeconfig"):
        parse_secret({"data": {"config": "A" * 600_000}}, NS, HOST, "tenant cluster eng/t1")


def test_gateway_requests_count_as_activity_where_newer() -> None:
    items = (
        InventoryItem(kind="tenant", project="eng", name="t1", generation=1, state="running", last_activity=100.0),
        InventoryItem(kind="space", project="eng", name="s1", generation=1, state="running", last_activity=500.0),
        InventoryItem(kind="tenant", project="eng", name="t2", generation=1, state="running", last_activity=7.0),
    )
    out = with_activity(items, {("tenant", "eng", "t1"): 300.0, ("space", "eng", "s1"): 200.0})
    assert [i.last_activity for i in out] == [300.0, 500.0, 7.0]
