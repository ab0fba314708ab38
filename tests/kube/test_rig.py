"""The test cluster itself: pods run (under kwok), namespaces finalize, garbage is collected,
and the fake kubelet answers logs, exec and port-forward."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.drivers.kube import KubeApi
from tests.kube.cluster import ControlPlane
from tests.kube.workers import LOG_LINES

pytestmark = pytest.mark.kube

NS = "rig"


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout:g}s: {what}")


def ready_pods(api: KubeApi, namespace: str, **labels: str) -> list[dict[str, Any]]:
    out = []
    for pod in api.list("Pod", namespace):
        if any((pod["metadata"].get("labels") or {}).get(k) != v for k, v in labels.items()):
            continue
        conditions = {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}
        if (pod.get("status") or {}).get("phase") == "Running" and conditions.get("Ready") == "True":
            out.append(pod)
    return out


def kubectl() -> str:
    found = shutil.which("kubectl", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if not found:
        pytest.skip("no kubectl on PATH")
    return found


def container(name: str) -> dict[str, Any]:
    return {"name": name, "image": f"example.invalid/{name}:1", "ports": [{"containerPort": 8080}]}


@pytest.fixture(scope="module")
def namespace(control_plane: ControlPlane) -> str:
    api = KubeApi.from_kubeconfig(control_plane.kubeconfig())
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}, field_manager="test")
    api.close()
    return NS


def test_nodes_are_ready_and_schedulable(admin_api: KubeApi, control_plane: ControlPlane) -> None:
    assert control_plane.workers is not None
    nodes = {n["metadata"]["name"]: n for n in admin_api.list("Node")}
    assert set(control_plane.workers.node_names) <= set(nodes)
    for name in control_plane.workers.node_names:
        node = nodes[name]
        assert not (node.get("spec") or {}).get("taints")
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
        assert node["status"]["allocatable"]["cpu"] == "32"


def test_deployment_pods_run_and_garbage_is_collected(admin_api: KubeApi, namespace: str) -> None:
    api = admin_api
    labels = {"app": "web"}
    api.apply(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [container("web")]}},
            },
        },
        field_manager="test",
    )
    pods = wait_for(lambda: len(ready_pods(api, namespace, app="web")) == 3, "3 pods of web Running and Ready")
    assert pods
    for pod in ready_pods(api, namespace, app="web"):
        assert pod["spec"]["nodeName"].startswith("kwok-node-") and pod["status"].get("podIP")
    # Garbage collection: the Deployment's ReplicaSet and its pods follow it.
    api.delete("Deployment", "web", namespace)
    wait_for(lambda: not api.list("ReplicaSet", namespace), "the ReplicaSet collected")
    wait_for(lambda: not [p for p in api.list("Pod", namespace) if p["metadata"]["labels"].get("app") == "web"], "pods")


def test_statefulset_with_a_volume_runs_scales_and_keeps_its_claim(admin_api: KubeApi, namespace: str) -> None:
    api = admin_api
    labels = {"app": "db"}
    sts: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "db", "namespace": namespace},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container("db")]}},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }
    api.apply(sts, field_manager="test")
    wait_for(lambda: ready_pods(api, namespace, app="db"), "db-0 Running and Ready")
    claim = api.get("PersistentVolumeClaim", "data-db-0", namespace)
    assert claim is not None and claim["status"]["phase"] == "Bound"
    uid = claim["metadata"]["uid"]
    api.patch_merge("StatefulSet", "db", {"spec": {"replicas": 0}}, namespace)
    wait_for(
        lambda: (
            not api.list("Pod", namespace)
            or not any(p["metadata"]["labels"].get("app") == "db" for p in api.list("Pod", namespace))
        ),
        "db scaled to zero",
    )
    api.patch_merge("StatefulSet", "db", {"spec": {"replicas": 1}}, namespace)
    wait_for(lambda: ready_pods(api, namespace, app="db"), "db-0 back")
    again = api.get("PersistentVolumeClaim", "data-db-0", namespace)
    assert again is not None and again["metadata"]["uid"] == uid, "the same claim (the same data) came back"


def test_unschedulable_pod_says_why(admin_api: KubeApi, namespace: str) -> None:
    api = admin_api
    big = container("big")
    big["resources"] = {"requests": {"cpu": "1000"}}
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "big", "namespace": namespace},
            "spec": {"containers": [big]},
        },
        field_manager="test",
    )

    def reason() -> str:
        pod = api.get("Pod", "big", namespace) or {}
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond["type"] == "PodScheduled" and cond["status"] == "False":
                return f"{cond.get('reason')}: {cond.get('message')}"
        return ""

    why = wait_for(reason, "the scheduler's reason")
    assert why.startswith("Unschedulable:") and "Insufficient cpu" in why
    api.delete("Pod", "big", namespace)


def test_logs_exec_and_port_forward_reach_the_fake_kubelet(
    admin_api: KubeApi, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    api = admin_api
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "shell", "namespace": namespace, "labels": {"app": "shell"}},
            "spec": {"containers": [container("shell")]},
        },
        field_manager="test",
    )
    wait_for(lambda: ready_pods(api, namespace, app="shell"), "shell Running and Ready")
    logs = httpx.get(
        f"{control_plane.url}/api/v1/namespaces/{namespace}/pods/shell/log",
        headers={"Authorization": f"Bearer {control_plane.admin_token}"},
        verify=ssl.create_default_context(cafile=str(control_plane.ca_file)),
        timeout=10,
    )
    assert logs.status_code == 200, logs.text
    assert logs.text.splitlines() == list(LOG_LINES)

    kc = kubectl()
    env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig())}
    out = subprocess.run(
        # One line read: kwok's exec does not pass the end of stdin on to the command.
        [kc, "exec", "-n", namespace, "-i", "shell", "--", "sh", "-c", "head -n1; echo done"],
        input="piped in\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "piped in\ndone\n"

    local = socket.socket()
    local.bind(("127.0.0.1", 0))
    port = local.getsockname()[1]
    local.close()
    forward = subprocess.Popen(
        [kc, "port-forward", "-n", namespace, "pod/shell", f"{port}:8080"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert forward.stdout is not None
        first = forward.stdout.readline().decode()
        assert "Forwarding from 127.0.0.1" in first, first
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"echo me\n")
            assert conn.recv(100) == b"echo me\n"
    finally:
        forward.terminate()
        forward.wait(10)


def test_a_deleted_namespace_finalizes(admin_api: KubeApi) -> None:
    api = admin_api
    api.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "rig-gone"}}, field_manager="test")
    api.apply(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "rig-gone", "labels": {"app": "p"}},
            "spec": {"containers": [container("p")]},
        },
        field_manager="test",
    )
    wait_for(lambda: ready_pods(api, "rig-gone", app="p"), "p Running")
    api.delete("Namespace", "rig-gone")
    wait_for(lambda: api.get("Namespace", "rig-gone") is None, "the namespace gone, pod and all")
