"""The ``sim`` driver: a whole cluster in memory, for demos and scale tests.

The simulated cluster has a stable identity like a real one: its UID (what
the platform's duplicate guard keys on) is generated once and kept in the
agent's state directory (``sim-cluster.json``), so a restarted agent is the
same cluster. Pure: no network, no ``nats``, no ``kubernetes``.

Tenant clusters and spaces live in ``<state_dir>/sim-state.json`` and the
journal of changes since, ``sim-journal.jsonl`` (``agent.drivers.sim_state``;
``read_state`` for the format). Every apply is one journal line made durable,
and for the sim *writing that line is the apply*: a change and the generation
that produced it are recorded in one step, so a ``kill -9`` at any moment
leaves either the old cluster or the new one, never a change without its
generation. Applying follows the rules of ``Driver.apply``:

- ``running`` / ``sleeping``: the object exists in that state, at ``spec.version``;
  sleep, wake and upgrade are just state and version changes. Becoming
  ``running`` counts as activity (``last_activity``).
- ``deleted``: the object is removed; its last generation stays behind as a
  *tombstone*, so a redelivered delete is not applied again. Deleting an object
  that does not exist is a successful apply (``applied=True``): the desired
  state is true, and the generation is recorded in the tombstone.
- The revision check compares ``command.generation`` with the object's current
  generation (its tombstone's when it was deleted; 0 when never seen): equal or
  older means nothing is done (``applied=False``).

Knobs for tests (environment, read when the driver is made):

- ``TETHER_SIM_APPLY_DELAY``: seconds every apply waits before it takes effect
  (default 0), so a test can kill the agent in the middle of one;
- ``TETHER_SIM_FAIL``: comma-separated object names whose applies fail
  permanently with reason ``SimulatedFailure``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import msgspec

from agent import VERSION
from agent.drivers import ApplyOutcome
from agent.drivers.sim_state import (
    Change,
    Counters,
    LogEntry,
    SimObject,
    SimState,
    Store,
    Tombstone,
    changed,
    load,
)
from agent.errors import ClusterUnreachable, DriverError
from agent.settings import AgentSettings
from agent.statefiles import read_json, write_json_atomic
from schemas.messages import (
    Capacity,
    ClusterHealth,
    Command,
    ControlPlaneHealth,
    InventoryItem,
)

logger = logging.getLogger(__name__)

GiB = 1024**3
KUBERNETES_VERSION = "v1.36.0-sim"
STATE_FILE = "sim-cluster.json"
"""The simulated cluster's identity (its UID)."""
UID_ENV = "TETHER_SIM_CLUSTER_UID"
APPLY_DELAY_ENV = "TETHER_SIM_APPLY_DELAY"
FAIL_ENV = "TETHER_SIM_FAIL"
_UID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def object_key(kind: str, project: str, name: str) -> str:
    """The key of an object in ``objects`` and ``tombstones``: ``<kind>/<project>/<name>``."""
    return f"{kind}/{project}/{name}"


def read_state(state_dir: Path) -> dict[str, Any]:
    """The simulated cluster's ``sim-state.json`` in ``state_dir``, as plain JSON (for tests and demos).

    Format (version 2; version 1 had no ``journal_seq`` and no journal)::

        {
          "format": 2,
          "objects": {"<kind>/<project>/<name>": {
              "kind", "project", "name", "generation", "state" ("running"|"sleeping"),
              "version", "members": [{"subject", "access"}], "resources": {"cpu", "memory"},
              "quota": {...}, "op_id", "created_at", "updated_at", "last_activity"}},
          "tombstones": {"<kind>/<project>/<name>": {"kind", "project", "name", "generation", "op_id", "at"}},
          "log": [{"op_id", "kind", "project", "name", "generation", "state", "version", "at"}],
          "log_dropped": 0,
          "counters": {"applied", "skipped", "failed"},
          "journal_seq": 0
        }

    (``sim-state.json`` holds this as of line ``journal_seq`` of the journal; the journal's later lines are
    made here.)

    ``log`` holds one entry per generation actually applied, oldest first. A
    state directory where nothing was ever applied reads as the empty state.
    Raises ValueError when a file is damaged.
    """
    return dict(msgspec.to_builtins(load(state_dir)))


def _parse_delay(raw: str) -> float:
    try:
        delay = float(raw)
    except ValueError:
        raise DriverError(f"${APPLY_DELAY_ENV} must be a number of seconds, not {raw!r}") from None
    if not 0 <= delay <= 3600:
        raise DriverError(f"${APPLY_DELAY_ENV} must be between 0 and 3600 seconds, not {raw!r}")
    return delay


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


def resolve_uid(state_dir: Path, explicit: str | None, environ: Mapping[str, str]) -> str:
    """Explicit setting, else ``$TETHER_SIM_CLUSTER_UID``, else the persisted UID, else a new one.

    An override is not persisted: without it the cluster is its old self again.
    """
    if explicit:
        return _check_uid(explicit, "the settings")
    from_env = environ.get(UID_ENV, "").strip()
    if from_env:
        return _check_uid(from_env, f"${UID_ENV}")
    path = state_dir / STATE_FILE
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


def control_planes_of(state: SimState) -> tuple[ControlPlaneHealth, ...]:
    """A simulated control plane is ready as soon as it runs: one fake pod, its version the spec's; asleep, it
    has no pods (the tenant's workloads stopped with it)."""
    return tuple(
        ControlPlaneHealth(
            project=o.project,
            name=o.name,
            replicas=int(o.state == "running"),
            ready_replicas=int(o.state == "running"),
            ready=o.state == "running",
            version=o.version if o.state == "running" else "",
            pods=int(o.state == "running"),
            reason="" if o.state == "running" else "Sleeping",
        )
        for o in sorted(state.objects.values(), key=lambda o: (o.project, o.name))
        if o.kind == "tenant"
    )


def outcome_of(state: SimState, key: str, applied: bool) -> ApplyOutcome:
    """What ``key`` is in ``state``, as an apply's outcome."""
    obj = state.objects.get(key)
    if obj is not None:
        return ApplyOutcome(applied=applied, state=obj.state, version=obj.version, generation=obj.generation)
    tomb = state.tombstones.get(key)
    return ApplyOutcome(applied=applied, state="deleted", generation=tomb.generation if tomb else 0)


def applied_change(old: SimState, command: Command, now: float) -> Change:
    """What applying ``command`` to ``old`` changes (pure: the caller saves it and makes it)."""
    spec = command.spec
    key = object_key(spec.kind, spec.project, spec.name)
    put: SimObject | None = None
    tombstone: Tombstone | None = None
    if spec.state == "deleted":
        tombstone = Tombstone(
            kind=spec.kind,
            project=spec.project,
            name=spec.name,
            generation=command.generation,
            op_id=command.op_id,
            at=now,
        )
        version = ""
    else:
        before = old.objects.get(key)
        waking = spec.state == "running" and (before is None or before.state != "running")
        put = SimObject(
            kind=spec.kind,
            project=spec.project,
            name=spec.name,
            generation=command.generation,
            state=spec.state,
            version=spec.version,
            members=spec.members,
            resources=spec.resources,
            quota=spec.quota,
            op_id=command.op_id,
            created_at=before.created_at if before else now,
            updated_at=now,
            last_activity=now if waking else (before.last_activity if before else 0.0),
        )
        version = spec.version
    entry = LogEntry(
        op_id=command.op_id,
        kind=spec.kind,
        project=spec.project,
        name=spec.name,
        generation=command.generation,
        state=spec.state,
        version=version,
        at=now,
    )
    c = old.counters
    return Change(
        seq=old.journal_seq + 1,
        key=key,
        put=put,
        tombstone=tombstone,
        entry=entry,
        counters=Counters(applied=c.applied + 1, skipped=c.skipped, failed=c.failed),
    )


def applied_state(old: SimState, command: Command, now: float) -> SimState:
    """The state after applying ``command`` to ``old`` (pure)."""
    return changed(old, applied_change(old, command, now))


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
        apply_delay: float | None = None,
        fail: Iterable[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``apply_delay`` and ``fail`` default to ``$TETHER_SIM_APPLY_DELAY`` and ``$TETHER_SIM_FAIL``."""
        if nodes < 0:
            raise DriverError(f"a simulated cluster cannot have {nodes} nodes")
        env = os.environ if environ is None else environ
        self.state_dir = state_dir
        self._nodes: dict[str, SimNode] = {
            f"sim-node-{i}": SimNode(name=f"sim-node-{i}", cpu=cpu_per_node, memory=memory_per_node)
            for i in range(1, nodes + 1)
        }
        self._uid = resolve_uid(state_dir, cluster_uid, env)
        if apply_delay is None:
            apply_delay = _parse_delay(env.get(APPLY_DELAY_ENV, "").strip() or "0")
        elif apply_delay < 0:
            raise DriverError(f"the apply delay must not be negative, not {apply_delay:g}")
        self.apply_delay = apply_delay
        if fail is None:
            fail = env.get(FAIL_ENV, "").split(",")
        self.fail = frozenset(n.strip() for n in fail if n.strip())
        self._clock = clock
        self._store = Store(state_dir)
        try:
            self._state = self._store.open()
        except (ValueError, OSError) as exc:
            raise DriverError(f"cannot read the simulated cluster's objects: {exc}") from None
        self._apply_lock = asyncio.Lock()
        self._health: tuple[SimState, ClusterHealth] | None = None
        self._api_reachable = True
        self._closed = False

    @classmethod
    def from_settings(cls, settings: AgentSettings) -> SimCluster:
        return cls(settings.state_path, nodes=settings.sim_nodes, cluster_uid=settings.sim_cluster_uid)

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
        self._health = None
        return node

    def mark_node_not_ready(self, name: str) -> SimNode:
        return self.set_node_ready(name, ready=False)

    def snapshot(self) -> ClusterHealth:
        """Health now, computed synchronously; the same object until the objects or a node change (every
        heartbeat asks)."""
        cached = self._health
        if cached is not None and cached[0] is self._state:
            return cached[1]
        ready = [n for n in self._nodes.values() if n.ready]
        health = ClusterHealth(
            nodes_ready=len(ready),
            nodes_total=len(self._nodes),
            capacity=Capacity(cpu=sum(n.cpu for n in ready), memory=sum(n.memory for n in ready)),
            kubernetes_version=KUBERNETES_VERSION,
            agent_version=VERSION,
            driver=self.name,
            api_reachable=True,
            control_planes=control_planes_of(self._state),
        )
        self._health = (self._state, health)
        return health

    def set_api_reachable(self, reachable: bool = True) -> None:
        """Simulate an API-server outage: health, apply and inventory raise ClusterUnreachable."""
        self._api_reachable = reachable

    # --- objects ----------------------------------------------------------------------
    @property
    def state(self) -> SimState:
        """Everything the simulated cluster holds now (what ``sim-state.json`` says)."""
        return self._state

    def get(self, kind: str, project: str, name: str) -> SimObject | None:
        return self._state.objects.get(object_key(kind, project, name))

    def generation_of(self, kind: str, project: str, name: str) -> int:
        """The object's current generation: its own, its tombstone's, or 0 when never seen."""
        key = object_key(kind, project, name)
        obj = self._state.objects.get(key)
        if obj is not None:
            return obj.generation
        tomb = self._state.tombstones.get(key)
        return tomb.generation if tomb is not None else 0

    def touch(self, kind: str, project: str, name: str, at: float | None = None) -> SimObject:
        """Record activity in a tenant cluster or space (what auto-sleep watches); persisted."""
        key = object_key(kind, project, name)
        obj = self._state.objects.get(key)
        if obj is None:
            raise DriverError(f"no {kind} {project}/{name} on the simulated cluster", reason="NotFound")
        obj = msgspec.structs.replace(obj, last_activity=self._clock() if at is None else at)
        self._commit(Change(seq=self._state.journal_seq + 1, key=key, put=obj, counters=self._state.counters))
        return obj

    def _check_reachable(self) -> None:
        if self._closed:
            raise DriverError("the simulated cluster was closed")
        if not self._api_reachable:
            raise ClusterUnreachable("the simulated cluster's API server is unreachable")

    def _commit(self, change: Change) -> None:
        """Make ``change`` durable (one journal line, ``agent.drivers.sim_state``), then current.

        Synchronous on purpose: no other task can see or change the state between the
        write and the swap, and a cancellation cannot fall between them.
        """
        new = changed(self._state, change)
        try:
            self._store.save(new, change)
        except OSError as exc:
            raise DriverError(
                f"cannot save the simulated cluster's objects in {self.state_dir}: {exc}",
                reason="StateNotSaved",
                transient=True,
            ) from None
        self._state = new

    def _count(self, **more: int) -> None:
        """Bump counters; persisted best effort (a failure here must not fail the command)."""
        c = self._state.counters
        counters = Counters(
            applied=c.applied + more.get("applied", 0),
            skipped=c.skipped + more.get("skipped", 0),
            failed=c.failed + more.get("failed", 0),
        )
        change = Change(seq=self._state.journal_seq + 1, counters=counters)
        try:
            self._commit(change)
        except DriverError as exc:
            logger.warning("%s", exc)
            self._state = changed(self._state, change)

    # --- Driver ---------------------------------------------------------------------
    async def cluster_uid(self) -> str:
        return self._uid

    async def health(self) -> ClusterHealth:
        self._check_reachable()
        return self.snapshot()

    async def apply(self, command: Command) -> ApplyOutcome:
        """Apply ``command`` (see the module's docstring); one apply at a time."""
        spec = command.spec
        for part, what in ((spec.project, "project"), (spec.name, "name")):
            if not part or "/" in part:
                raise DriverError(f"invalid {what} {part!r} in the command", reason="InvalidSpec")
        key = object_key(spec.kind, spec.project, spec.name)
        async with self._apply_lock:
            self._check_reachable()
            if self.apply_delay:
                await asyncio.sleep(self.apply_delay)
                self._check_reachable()
            if self.generation_of(spec.kind, spec.project, spec.name) >= command.generation:
                self._count(skipped=1)
                return outcome_of(self._state, key, applied=False)
            if spec.name in self.fail:
                self._count(failed=1)
                raise DriverError(
                    f"simulated failure applying {spec.kind} {spec.project}/{spec.name} at generation "
                    f"{command.generation} (${FAIL_ENV} names {spec.name!r})",
                    reason="SimulatedFailure",
                )
            self._commit(applied_change(self._state, command, self._clock()))
            return outcome_of(self._state, key, applied=True)

    async def inventory(self) -> tuple[InventoryItem, ...]:
        self._check_reachable()
        return tuple(
            InventoryItem(
                kind=obj.kind,
                project=obj.project,
                name=obj.name,
                generation=obj.generation,
                state=obj.state,
                version=obj.version,
                last_activity=obj.last_activity,
            )
            for _, obj in sorted(self._state.objects.items())
        )

    async def close(self) -> None:
        self._closed = True
        self._store.close()
