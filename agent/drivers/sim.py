"""The ``sim`` driver: a whole cluster in memory, for demos and scale tests.

The simulated cluster has a stable identity like a real one: its UID (what
the platform's duplicate guard keys on) is generated once and kept in the
agent's state directory, so a restarted agent is the same cluster. Pure: no
network, no ``nats``, no ``kubernetes``.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from agent import VERSION
from agent.errors import DriverError
from agent.settings import AgentSettings
from agent.statefiles import read_json, write_json_atomic
from schemas.messages import Capacity, ClusterHealth

GiB = 1024**3
KUBERNETES_VERSION = "v1.36.0-sim"
STATE_FILE = "sim-cluster.json"
UID_ENV = "TETHER_SIM_CLUSTER_UID"
_UID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class SimNode:
    """One simulated node."""

    name: str
    """Node name, ``sim-node-<n>``."""

    ready: bool = True
    """The node's Ready condition."""

    cpu: float = 4.0
    """Allocatable CPU cores."""

    memory: int = 16 * GiB
    """Allocatable memory, bytes."""


def _check_uid(uid: str, source: str) -> str:
    if not _UID.match(uid):
        raise DriverError(
            f"invalid simulated cluster UID {uid!r} from {source}: expected 1-128 letters, digits, '-' or '_'"
        )
    return uid


class SimCluster:
    """An in-memory cluster of ``nodes`` nodes with a stable UID."""

    name = "sim"

    def __init__(
        self,
        state_dir: Path,
        *,
        nodes: int = 3,
        cluster_uid: str | None = None,
        cpu_per_node: float = 4.0,
        memory_per_node: int = 16 * GiB,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if nodes < 0:
            raise DriverError(f"a simulated cluster cannot have {nodes} nodes")
        self.state_dir = state_dir
        self._nodes: dict[str, SimNode] = {
            f"sim-node-{i}": SimNode(name=f"sim-node-{i}", cpu=cpu_per_node, memory=memory_per_node)
            for i in range(1, nodes + 1)
        }
        self._uid = self._resolve_uid(cluster_uid, os.environ if environ is None else environ)
        self._closed = False

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> SimCluster:
        return cls(settings.state_path, nodes=settings.sim_nodes, cluster_uid=settings.sim_cluster_uid)

    # --- identity -------------------------------------------------------------------
    def _resolve_uid(self, explicit: str | None, environ: Mapping[str, str]) -> str:
        """Explicit setting, else ``$TETHER_SIM_CLUSTER_UID``, else the persisted UID, else a new one.

        An override is not persisted: without it the cluster is its old self again.
        """
        if explicit:
            return _check_uid(explicit, "the settings")
        from_env = environ.get(UID_ENV, "").strip()
        if from_env:
            return _check_uid(from_env, f"${UID_ENV}")
        path = self.state_dir / STATE_FILE
        try:
            data = read_json(path)
        except (ValueError, OSError) as exc:
            raise DriverError(f"cannot read the simulated cluster's identity: {exc}") from None
        if data is not None:
            uid = data.get("cluster_uid")
            if not isinstance(uid, str):
                raise DriverError(f"{path} is damaged: no 'cluster_uid' string")
            return _check_uid(uid, str(path))
        uid = str(uuid.uuid4())
        try:
            write_json_atomic(path, {"cluster_uid": uid})
        except OSError as exc:
            raise DriverError(f"cannot save the simulated cluster's identity to {path}: {exc}") from None
        return uid

    @property
    def uid(self) -> str:
        return self._uid

    # --- nodes ----------------------------------------------------------------------
    @property
    def nodes(self) -> tuple[SimNode, ...]:
        return tuple(self._nodes.values())

    def node(self, name: str) -> SimNode:
        try:
            return self._nodes[name]
        except KeyError:
            known = ", ".join(self._nodes) or "none"
            raise DriverError(f"no node {name!r} in the simulated cluster (nodes: {known})") from None

    def set_node_ready(self, name: str, ready: bool = True) -> SimNode:
        """Set a node's Ready condition; returns the updated node."""
        node = replace(self.node(name), ready=ready)
        self._nodes[name] = node
        return node

    def mark_node_not_ready(self, name: str) -> SimNode:
        return self.set_node_ready(name, ready=False)

    def snapshot(self) -> ClusterHealth:
        """Health now, computed synchronously."""
        ready = [n for n in self._nodes.values() if n.ready]
        return ClusterHealth(
            nodes_ready=len(ready),
            nodes_total=len(self._nodes),
            capacity=Capacity(cpu=sum(n.cpu for n in ready), memory=sum(n.memory for n in ready)),
            kubernetes_version=KUBERNETES_VERSION,
            agent_version=VERSION,
            driver=self.name,
            api_reachable=True,
        )

    # --- Driver ---------------------------------------------------------------------
    async def cluster_uid(self) -> str:
        return self._uid

    async def health(self) -> ClusterHealth:
        if self._closed:
            raise DriverError("the simulated cluster was closed")
        return self.snapshot()

    async def close(self) -> None:
        self._closed = True
