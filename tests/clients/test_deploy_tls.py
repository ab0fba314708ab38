"""Findings 5 and 6 of issue 15: every deployment form carries the CA of a TLS platform, and the Helm chart
upgrades without the spent connect token.

- ``tether cluster connect --manifests`` (the API's manifests) holds the CA in a ConfigMap and passes
  ``--ca-file``; a real agent process started with exactly what they contain connects over TLS.
- ``helm template`` renders the same objects as the manifests with ``caCert`` set; installing needs the token,
  an upgrade (``--is-upgrade``) renders without one and drops the spent token's Secret.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.api import manifests
from tests.harness import Proc, Stack
from tests.kube.cluster import KubeBinUnavailable, build_helm, unavailable

pytestmark = pytest.mark.clients

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "agent" / "deploy" / "helm" / "tether-agent"
SERVER = "tls://nats.example:4222"
CA = "-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n"


def by_key(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs if o}


def helm_template(tmp_path: Path, *values: str, upgrade: bool = False) -> subprocess.CompletedProcess[str]:
    try:
        helm = build_helm()
    except KubeBinUnavailable as exc:
        unavailable("helm", exc)
    args = [str(helm), "template", "tether-agent", str(CHART), "--kube-version", "1.36.5"]
    for value in values:
        args += ["--set-file", value] if value.startswith("caCert=") else ["--set", value]
    if upgrade:
        args.append("--is-upgrade")
    return subprocess.run(args, capture_output=True, text=True, timeout=60)


def test_helm_carries_the_ca_like_the_manifests(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(CA)
    out = helm_template(tmp_path, "cluster=edge-1", "token=tct.x", f"server={SERVER}", f"caCert={ca}")
    assert out.returncode == 0, out.stderr
    from_helm = by_key(list(yaml.safe_load_all(out.stdout)))
    expected = by_key(manifests.objects(cluster="edge-1", token="tct.x", server=SERVER, ca_pem=CA))
    assert from_helm == expected
    assert from_helm[("ConfigMap", manifests.CA_CONFIGMAP)]["data"]["ca.crt"] == CA
    args = from_helm[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--ca-file") + 1] == manifests.CA_FILE


def test_helm_installs_with_a_token_once_and_upgrades_without(tmp_path: Path) -> None:
    install = helm_template(tmp_path, "cluster=edge-1", f"server={SERVER}")
    assert install.returncode != 0 and "set token" in install.stderr
    upgrade = helm_template(tmp_path, "cluster=edge-1", f"server={SERVER}", upgrade=True)
    assert upgrade.returncode == 0, upgrade.stderr
    objs = by_key(list(yaml.safe_load_all(upgrade.stdout)))
    assert ("Secret", manifests.TOKEN_SECRET) not in objs  # the spent token goes
    assert ("Secret", manifests.STATE_SECRET) in objs  # the agent's identity stays (never given data by the chart)
    assert "data" not in objs[("Secret", manifests.STATE_SECRET)]
    container = objs[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]
    token_env = next(e for e in container["env"] if e["name"] == "TETHER_AGENT_TOKEN")
    assert token_env["valueFrom"]["secretKeyRef"]["optional"] is True


async def test_an_agent_connects_with_what_the_manifests_contain(tmp_path: Path) -> None:
    stack = Stack(tmp=tmp_path, tls=True)
    try:
        await stack.start()
        info = await stack.connect_cluster("edge-1")
        objs = by_key(list(yaml.safe_load_all(info["manifests"])))
        ca_pem = objs[("ConfigMap", manifests.CA_CONFIGMAP)]["data"]["ca.crt"]
        assert ca_pem == (tmp_path / "tls" / "ca.pem").read_text()
        token = objs[("Secret", manifests.TOKEN_SECRET)]["stringData"]["token"]
        container = objs[("Deployment", "tether-agent")]["spec"]["template"]["spec"]["containers"][0]
        args = list(container["args"])
        mount = next(m for m in container["volumeMounts"] if m["name"] == "ca")["mountPath"]
        # The pod's view, on this machine: the ConfigMap mounted where the manifests mount it.
        mounted = tmp_path / "pod" / mount.lstrip("/")
        mounted.mkdir(parents=True)
        (mounted / "ca.crt").write_text(ca_pem)
        ca_file = args[args.index("--ca-file") + 1]
        args[args.index("--ca-file") + 1] = str(tmp_path / "pod" / ca_file.lstrip("/"))
        args[args.index("--driver") + 1] = "sim"  # no cluster here: the link is what is under test
        args[args.index("--state-dir") + 1] = str(tmp_path / "agent-state")
        server = args[args.index("--server") + 1]
        assert server.startswith("tls://") or server == stack.nats_url, server
        agent = Proc(
            name="agent-edge-1",
            argv=[sys.executable, "-m", "agent", *args],
            env=stack.env(TETHER_AGENT_TOKEN=token),  # from the Secret, as the Deployment's env says
            log=tmp_path / "logs" / "agent-edge-1.log",
        ).start()
        stack.agents.append(agent)
        await stack.wait_online("edge-1", timeout=20)
    finally:
        stack.stop()
