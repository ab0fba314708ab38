"""What makes the test cluster's pods run: kube-controller-manager, kube-scheduler and kwok with fake nodes.

kwok (``sigs.k8s.io/kwok``) plays every node's kubelet: it keeps the nodes Ready (node leases), moves each
pod scheduled onto them to Running/Ready, deletes pods once they are terminating, and serves the kubelet API
(logs, exec, port-forward) that kube-apiserver calls. Its behaviour comes from the stage and kubelet
configuration in ``kwok_config`` (passed with ``--config``; without stages kwok refuses to start).

Stages written for these tests (after kwok's documented Stage API, kwok.sigs.k8s.io/docs/user/stages-configuration):

- ``node-ready``: a node that is not Ready becomes Ready, with an InternalIP (127.0.0.1: kube-apiserver is
  started with ``--kubelet-preferred-address-types=InternalIP``), kwok's kubelet port, and capacity when it
  has none;
- ``pod-running``: a scheduled, pending pod becomes Running and Ready (every container running and ready);
- ``pod-gone``: a terminating pod is removed (what a kubelet does once its containers stopped).

A pod that cannot be scheduled stays Pending with the scheduler's reason, as on a real cluster.

The fake kubelet: ``kubectl logs`` of any container returns ``LOG_LINES`` (a file in CRI log format),
``kubectl exec`` runs the command on this machine in the rig's work directory, and ``kubectl port-forward``
connects every port to ``cat`` (an echo).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agent.drivers.kube import DriverError, KubeApi
from services.platform.natsd import free_port

LOG_LINES = ("hello from kwok", "second line")
"""What ``kubectl logs`` answers for every container of the test cluster."""
NODE_CPU = "32"
NODE_MEMORY = "64Gi"
NODE_PODS = "110"
STORAGE_CLASS = "standard"

_NODE_READY = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-ready
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Ready, status: "True", reason: KubeletReady, message: "kwok plays this kubelet",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      {{ range list "MemoryPressure" "DiskPressure" "PIDPressure" "NetworkUnavailable" }}
      - {type: {{ . }}, status: "False", reason: KwokNode, message: "",
         lastHeartbeatTime: {{ $now | Quote }}, lastTransitionTime: {{ $now | Quote }}}
      {{ end }}
      addresses:
      - {type: InternalIP, address: {{ NodeIP | Quote }}}
      - {type: Hostname, address: {{ NodeName | Quote }}}
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{ NodePort }}
      {{ with .status.allocatable }}
      allocatable: {{ toJson . }}
      {{ else }}
      allocatable: {cpu: "__CPU__", memory: "__MEMORY__", pods: "__PODS__"}
      {{ end }}
      {{ with .status.capacity }}
      capacity: {{ toJson . }}
      {{ else }}
      capacity: {cpu: "__CPU__", memory: "__MEMORY__", pods: "__PODS__"}
      {{ end }}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{ printf "kwok-%s" Version | Quote }}
        kubeProxyVersion: {{ printf "kwok-%s" Version | Quote }}
        containerRuntimeVersion: {{ printf "kwok-%s" Version | Quote }}
        kernelVersion: {{ printf "kwok-%s" Version | Quote }}
        bootID: ""
        machineID: ""
        osImage: ""
        systemUUID: ""
      phase: Running
"""

_POD_RUNNING = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-running
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: DoesNotExist}
    - {key: '.spec.nodeName', operator: Exists}
    - {key: '.status.phase', operator: In, values: [Pending]}
  next:
    statusTemplate: |
      {{ $now := Now }}
      phase: Running
      startTime: {{ $now | Quote }}
      conditions:
      {{ range list "PodScheduled" "Initialized" "ContainersReady" "Ready" }}
      - {type: {{ . }}, status: "True", lastTransitionTime: {{ $now | Quote }}}
      {{ end }}
      containerStatuses:
      {{ range .spec.containers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: true
        started: true
        restartCount: 0
        state: {running: {startedAt: {{ $now | Quote }}}}
      {{ end }}
      initContainerStatuses:
      {{ range .spec.initContainers }}
      - name: {{ .name | Quote }}
        image: {{ .image | Quote }}
        imageID: ""
        ready: true
        restartCount: 0
        state: {terminated: {exitCode: 0, reason: Completed, startedAt: {{ $now | Quote }},
                finishedAt: {{ $now | Quote }}}}
      {{ end }}
      {{ with NodeIPWith .spec.nodeName }}
      hostIP: {{ . | Quote }}
      {{ end }}
      {{ with PodIPWith .spec.nodeName __POD__ }}
      podIP: {{ . | Quote }}
      podIPs: [{ip: {{ . | Quote }}}]
      {{ end }}
"""

_POD_GONE = """\
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-gone
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
    - {key: '.metadata.deletionTimestamp', operator: Exists}
  next:
    delete: true
"""


_POD_ARGS = (
    '( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" )'
)


def kwok_config(log_file: Path, exec_dir: Path) -> str:
    """kwok's ``--config``: the stages above and the fake kubelet's logs, exec and port-forward."""
    node = _NODE_READY.replace("__CPU__", NODE_CPU).replace("__MEMORY__", NODE_MEMORY).replace("__PODS__", NODE_PODS)
    kubelet: list[dict[str, Any]] = [
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterLogs",
            "metadata": {"name": "every-container"},
            "spec": {"logs": [{"logsFile": str(log_file), "follow": False}]},
        },
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterExec",
            "metadata": {"name": "every-container"},
            "spec": {"execs": [{"local": {"workDir": str(exec_dir)}}]},
        },
        {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "ClusterPortForward",
            "metadata": {"name": "every-port"},
            "spec": {"forwards": [{"command": ["cat"]}]},
        },
    ]
    # No KwokConfiguration document: with one, kwok takes its unset options as zero, not as their defaults.
    docs = [
        node,
        _POD_RUNNING.replace("__POD__", _POD_ARGS),
        _POD_GONE,
        *(yaml.safe_dump(doc) for doc in kubelet),
    ]
    return "---\n".join(docs)


def cri_log(lines: tuple[str, ...]) -> str:
    """Lines in the CRI log format kwok reads (``<RFC 3339 time> stdout F <text>``)."""
    return "".join(f"2026-01-01T00:00:0{i % 10}.000000000Z stdout F {line}\n" for i, line in enumerate(lines))


def _node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok"},
            # kwok's own convention, read by tools that look for its nodes.
            "annotations": {"kwok.x-k8s.io/node": "fake"},
        },
    }


@dataclass
class Workers:
    """kube-controller-manager, kube-scheduler and kwok against one running kube-apiserver."""

    bin_dir: Path
    workdir: Path
    kubeconfig: Path
    cert_file: Path
    key_file: Path
    sa_key_file: Path
    nodes: int = 2
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def node_names(self) -> list[str]:
        return [f"kwok-node-{i}" for i in range(self.nodes)]

    def start(self, api: KubeApi, timeout: float = 60.0) -> None:
        w = self.workdir
        (w / "kwok").mkdir(exist_ok=True)
        log_file = w / "kwok" / "container.log"
        log_file.write_text(cri_log(LOG_LINES))
        (w / "kwok" / "kwok.yaml").write_text(kwok_config(log_file, w / "kwok"))
        kubelet_port = free_port()
        self._spawn(
            "kube-controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--secure-port=0",
            f"--service-account-private-key-file={self.sa_key_file}",
            f"--root-ca-file={self.cert_file}",
            # The in-tree hostPath provisioner (test clusters only): PVCs of the default class get a volume.
            "--enable-hostpath-provisioner=true",
            "--controllers=*,-nodeipam",
        )
        self._spawn("kube-scheduler", f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--secure-port=0")
        self._spawn(
            "kwok",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={w / 'kwok' / 'kwok.yaml'}",
            "--manage-nodes-with-label-selector=type=kwok",
            "--node-ip=127.0.0.1",
            f"--node-port={kubelet_port}",
            f"--server-address=127.0.0.1:{kubelet_port}",
            f"--tls-cert-file={self.cert_file}",
            f"--tls-private-key-file={self.key_file}",
            "--node-lease-duration-seconds=40",
            "--cidr=10.244.0.0/16",
        )
        api.apply(
            {
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {
                    "name": STORAGE_CLASS,
                    "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
                },
                "provisioner": "kubernetes.io/host-path",
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
            },
            field_manager="test-rig",
        )
        for name in self.node_names:
            api.apply(_node(name), field_manager="test-rig")
        self._wait(timeout, "nodes Ready and untainted, aggregated ClusterRoles filled", lambda: self._ready(api))

    def _spawn(self, name: str, *args: str) -> None:
        with open(self.workdir / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(
                [str(self.bin_dir / name), *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _ready(self, api: KubeApi) -> bool:
        from agent.drivers.kube import node_is_ready

        nodes = [n for n in api.list("Node") if n["metadata"]["name"] in self.node_names]
        if len(nodes) < self.nodes or not all(node_is_ready(n) for n in nodes):
            return False
        # kube-controller-manager takes a new node's not-ready taint off once it has seen it Ready.
        if any((n.get("spec") or {}).get("taints") for n in nodes):
            return False
        admin = api.get("ClusterRole", "admin")
        return bool(admin and admin.get("rules"))

    def _wait(self, timeout: float, what: str, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log(name)}")
            try:
                if check():
                    return
            except DriverError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"not ready after {timeout:g}s: {what}\n{self.log('kwok')}")

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def volume_paths(self, api: KubeApi) -> list[Path]:
        """Directories the hostPath provisioner made for this cluster's volumes (under /tmp/hostpath_pv)."""
        out = []
        for pv in api.list("PersistentVolume"):
            path = ((pv.get("spec") or {}).get("hostPath") or {}).get("path") or ""
            if path.startswith("/tmp/hostpath_pv/"):
                out.append(Path(path))
        return out

    def stop(self) -> None:
        """kwok and the controllers (clients of the API server) stop before it does; SIGKILL after 10 s."""
        for name in ("kwok", "kube-scheduler", "kube-controller-manager"):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            # The whole process group (each runs in its own session): kwok's fake kubelet runs `kubectl exec`
            # commands as its children and does not end them when the stream closes, so they go with it.
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
