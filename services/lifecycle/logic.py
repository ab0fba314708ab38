"""Pure lifecycle rules: placement, quotas, transitions, phases, RBAC, reconciliation.

No I/O and no clock: ``now`` and operation ids are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, assert_never

import msgspec

from schemas import versions
from schemas.conditions import set_condition
from schemas.errors import Conflict, Forbidden, InvalidInput, NotFound
from schemas.messages import (
    MAX_GENERATION,
    Action,
    ClusterRecord,
    CommandResult,
    Condition,
    Failure,
    InventoryItem,
    Member,
    Membership,
    Observed,
    Operation,
    Phase,
    Presence,
    ProjectRecord,
    Quota,
    Resources,
    Role,
    Unseen,
    WorkloadCreate,
    WorkloadKind,
    WorkloadRecord,
    WorkloadRef,
    WorkloadSpec,
    clip,
    own_only,
    ref_of,
    workload_key,
)
from schemas.names import check_name
from schemas.units import format_version, parse_version

SUPPORTED_MINORS = versions.SUPPORTED_MINORS
MAX_REASON = 64
"""Characters of an agent's failure reason kept (a CamelCase word, like Kubernetes' reasons)."""
RESYNC_PREFIX = "resync-"
"""Operation ids of re-sent commands (a generation sent again after an inventory showed it missing)."""
MAX_RESENDS = 1_000
"""Commands one inventory may re-send; the rest wait for the next resync (every 2 minutes)."""
MAX_ORPHAN_DELETES = 100
"""Deletes one inventory may cause; an inventory naming thousands of unknown objects must not flood the
cluster's command stream (the rest wait for the next resync)."""
SUPERSEDED_BY = "superseded by "
"""How an operation superseded before its cluster saw it ends (its audit record's result), then the operation
that superseded it."""
MAX_EARLIER = 16
"""Earlier operations a record remembers as not seen by its cluster (``WorkloadRecord.earlier``). The bucket
keeps the last 5 records of an object, so an operation this far back can no longer reach its agent: one
pushed out ends superseded by the operation that pushed it."""
DEFAULT_VERSION = versions.DEFAULT_VERSION
DEFAULT_RESOURCES: dict[str, Resources] = {
    "tenant": Resources(cpu=1.0, memory=2 * 1024**3),
    "space": Resources(cpu=0.5, memory=1 * 1024**3),
}


# --- versions ------------------------------------------------------------------------
def check_version(text: str) -> str:
    minor, patch = parse_version(text)
    if minor not in SUPPORTED_MINORS:
        supported = ", ".join(f"v1.{m}" for m in SUPPORTED_MINORS)
        raise InvalidInput(f"unsupported Kubernetes version {text!r}: supported are {supported}")
    return format_version(minor, patch)


def check_upgrade(current: str, target: str, name: str) -> str:
    target = check_version(target)
    cur_minor, cur_patch = parse_version(current)
    new_minor, new_patch = parse_version(target)
    if (new_minor, new_patch or 0) < (cur_minor, cur_patch or 0):
        raise InvalidInput(f"cannot downgrade tenant {name!r} from {current} to {target}")
    if new_minor > cur_minor + 1:
        raise InvalidInput(
            f"cannot upgrade tenant {name!r} from {current} to {target}: upgrade one minor version at a time "
            f"(next: v1.{cur_minor + 1})"
        )
    if target == current:
        raise InvalidInput(f"tenant {name!r} already runs {current}")
    return target


# --- placement ---------------------------------------------------------------------------
def used_on(records: Iterable[WorkloadRecord], cluster: str) -> Resources:
    cpu, memory = 0.0, 0
    for r in records:
        if r.spec.cluster == cluster and r.spec.state != "deleted":
            cpu += r.spec.resources.cpu
            memory += r.spec.resources.memory
    return Resources(cpu=cpu, memory=memory)


def room(cluster: str, presence: Presence | None, records: Iterable[WorkloadRecord], need: Resources) -> bool:
    if presence is None:
        return False
    cap = presence.health.capacity
    used = used_on(records, cluster)
    return used.cpu + need.cpu <= cap.cpu and used.memory + need.memory <= cap.memory


def place(
    project: ProjectRecord,
    requested: str,
    clusters: Mapping[str, ClusterRecord],
    presence: Mapping[str, Presence],
    records: list[WorkloadRecord],
    need: Resources,
) -> str:
    """The cluster a new tenant or space goes to."""
    if requested:
        check_name(requested, "cluster name")
        return _place_named(project, requested, clusters.get(requested), presence.get(requested), records, need)
    candidates = [c for c in clusters.values() if _usable(project, c, presence.get(c.name))]
    if not candidates:
        # Permanent until a cluster comes online: a conflict with the fleet's state, not an outage of ours.
        raise Conflict(f"no online cluster is available to project {project.name!r}")
    fitting = [c for c in candidates if room(c.name, presence.get(c.name), records, need)]
    if not fitting:
        raise Conflict(
            f"no online cluster of project {project.name!r} has room for {need.cpu:g} CPU and {_gib(need.memory)}"
        )

    def free_cpu(c: ClusterRecord) -> float:
        return presence[c.name].health.capacity.cpu - used_on(records, c.name).cpu

    return max(fitting, key=lambda c: (free_cpu(c), c.name)).name


def _usable(project: ProjectRecord, cluster: ClusterRecord, presence: Presence | None) -> bool:
    return cluster.state == "connected" and project.allows(cluster) and presence is not None and presence.online


def _place_named(
    project: ProjectRecord,
    requested: str,
    cluster: ClusterRecord | None,
    p: Presence | None,
    records: list[WorkloadRecord],
    need: Resources,
) -> str:
    if cluster is None or cluster.state == "disconnected":
        raise NotFound(f"cluster {requested!r} not found")
    if not project.allows(cluster):
        raise Forbidden(f"project {project.name!r} may not use cluster {requested!r}")
    # An offline cluster is fine when named: the command waits for its agent.
    if p is not None and p.health.capacity.cpu and not room(requested, p, records, need):
        raise Conflict(f"cluster {requested!r} has no room for {need.cpu:g} CPU and {_gib(need.memory)} memory")
    return requested


def _gib(n: int) -> str:
    return f"{n / 1024**3:g}Gi"


# --- quotas --------------------------------------------------------------------------------
def check_quota(
    project: ProjectRecord, records: Iterable[WorkloadRecord], kind: WorkloadKind, add: Resources, *, count: int = 1
) -> None:
    """Raise Forbidden naming the quota that ``add`` (and ``count`` more of ``kind``) would exceed."""
    q: Quota = project.quota
    live = [r for r in records if r.spec.project == project.name and r.spec.state != "deleted"]
    _check_count(project, live, kind, count)
    cpu = sum(r.spec.resources.cpu for r in live) + add.cpu
    if q.cpu is not None and cpu > q.cpu + 1e-9:
        raise Forbidden(f"quota exceeded: project {project.name!r} allows {q.cpu:g} CPU (would use {cpu:g})")
    memory = sum(r.spec.resources.memory for r in live) + add.memory
    if q.memory is not None and memory > q.memory:
        raise Forbidden(
            f"quota exceeded: project {project.name!r} allows {_gib(q.memory)} memory (would use {_gib(memory)})"
        )


def _check_count(project: ProjectRecord, live: list[WorkloadRecord], kind: WorkloadKind, count: int) -> None:
    n = sum(1 for r in live if r.spec.kind == kind) + count
    limit = project.quota.tenants if kind == "tenant" else project.quota.spaces
    if limit is not None and n > limit:
        raise Forbidden(f"quota exceeded: project {project.name!r} allows {limit} {kind}s ({n - count} in use)")


# --- RBAC ------------------------------------------------------------------------------------
def members_for(membership: Membership, owner: str, owner_role: Role | None = None) -> tuple[Member, ...]:
    """Who may use one tenant cluster or space, and how.

    Project admins administer everything; the owner administers their own, however they are a member
    (``owner_role``: their effective role, through teams too; None: their direct role only); other users
    and viewers may look. An owner who is no longer a user or admin of the project gets nothing as owner.
    """
    out: dict[str, Member] = {}

    def level(role: Role, is_owner: bool) -> Literal["admin", "edit", "view"]:
        if role == "admin" or (is_owner and role == "user"):
            return "admin"
        return "view"

    for user, role in sorted(membership.users.items()):
        out[f"user:{user}"] = Member(subject=f"user:{user}", access=level(role, user == owner))
    for team, role in sorted(membership.teams.items()):
        out[f"team:{team}"] = Member(subject=f"team:{team}", access=level(role, False))
    if owner and owner_role in ("user", "admin"):
        out[f"user:{owner}"] = Member(subject=f"user:{owner}", access="admin")
    return tuple(out.values())


# --- records and transitions ---------------------------------------------------------------------
def validate_create(req: WorkloadCreate) -> None:
    check_name(req.project, "project name")
    check_name(req.name, f"{req.kind} name")
    if req.cluster:
        check_name(req.cluster, "cluster name")
    if req.kind == "space" and (req.version or req.sleep_after):
        raise InvalidInput("spaces have no version and do not sleep")
    if req.version:
        check_version(req.version)
    if req.sleep_after < 0:
        raise InvalidInput("sleep_after must not be negative")
    asked = [req.cpu, req.memory] + ([req.resources.cpu, req.resources.memory] if req.resources else [])
    if any(n is not None and n < 0 for n in asked):
        raise InvalidInput("resources must not be negative")


def resources_for(req: WorkloadCreate) -> Resources:
    """What a create asks for: ``resources`` when given, else each of ``cpu``/``memory`` given, else the
    kind's default (``DEFAULT_RESOURCES``: the one place the platform's defaults live)."""
    if req.resources is not None:
        return req.resources
    default = DEFAULT_RESOURCES[req.kind]
    return Resources(
        cpu=req.cpu if req.cpu is not None else default.cpu,
        memory=req.memory if req.memory is not None else default.memory,
    )


def is_tombstone(record: WorkloadRecord) -> bool:
    """A deleted object the cluster confirmed gone. Kept so generations never repeat for a name."""
    return record.spec.state == "deleted" and in_sync(record) and (record.observed is None or record.observed.settled)


def new_record(
    req: WorkloadCreate,
    project: ProjectRecord,
    cluster: str,
    membership: Membership,
    now: float,
    op_id: str,
    previous: WorkloadRecord | None = None,
    owner_role: Role | None = None,
) -> WorkloadRecord:
    """A new object; re-creating a deleted name continues its generations (agents remember them)."""
    spec = WorkloadSpec(
        kind=req.kind,
        project=req.project,
        name=req.name,
        cluster=cluster,
        state="running",
        version=check_version(req.version or DEFAULT_VERSION) if req.kind == "tenant" else "",
        resources=resources_for(req),
        members=members_for(membership, req.created_by, owner_role),
        quota=project.quota,
    )
    record = WorkloadRecord(
        spec=spec,
        generation=previous.generation + 1 if previous else 1,
        op_id=op_id,
        operation="create",
        created_by=req.created_by,
        created_at=now,
        updated_at=now,
        sleep_after=req.sleep_after,
        last_activity=now,
    )
    return with_conditions(record, now)


def _bump(
    record: WorkloadRecord, spec: WorkloadSpec, operation: Operation, op_id: str, now: float, activity: bool = True
) -> WorkloadRecord:
    new = msgspec.structs.replace(
        record,
        spec=spec,
        generation=record.generation + 1,
        op_id=op_id,
        operation=operation,
        updated_at=now,
        last_activity=now if activity else record.last_activity,
        earlier=_unseen(record)[-MAX_EARLIER:],
    )
    return with_conditions(new, now)


# --- operations superseded before their cluster saw them ---------------------------------------------
def _seen(record: WorkloadRecord, generation: int) -> bool:
    """The cluster reported ``generation`` (or a later one) of ``record``: applied, or failed."""
    obs, failure = record.observed, record.failure
    return (obs is not None and obs.generation >= generation) or (
        failure is not None and failure.generation >= generation
    )


def _unseen(record: WorkloadRecord) -> tuple[Unseen, ...]:
    """The operations of ``record`` its cluster has not seen: its earlier ones, and its own unless seen."""
    if _seen(record, record.generation):
        return record.earlier
    own = Unseen(op_id=record.op_id, generation=record.generation, operation=record.operation)
    return (*record.earlier, own)


def pushed_out(old: WorkloadRecord, new: WorkloadRecord) -> tuple[Unseen, ...]:
    """The operations ``new`` (written over ``old``) no longer remembers although its cluster never saw them
    (more than ``MAX_EARLIER``): superseded by ``new``'s operation."""
    kept = {u.op_id for u in new.earlier}
    return tuple(u for u in _unseen(old) if u.op_id not in kept and u.generation < new.generation)


def settle_earlier(record: WorkloadRecord, result: CommandResult) -> tuple[WorkloadRecord, tuple[Unseen, ...]]:
    """What ``result`` ends among the record's earlier operations. Its cluster saw the result's generation:
    the operation of that generation ends with the result itself (applied or failed), and so do those the
    result names as applied before it (``result.earlier``: their results were left out while a newer
    generation waited); the others below it were superseded before the cluster saw them (by the result's
    operation, which it applied in their place). Returns the record without them, and the superseded ones
    (oldest first)."""
    if not record.earlier or result.generation > record.generation:
        return record, ()
    kept = tuple(u for u in record.earlier if u.generation > result.generation)
    if len(kept) == len(record.earlier):
        return record, ()
    seen = set(result.earlier)
    superseded = tuple(u for u in record.earlier if u.generation < result.generation and u.generation not in seen)
    return msgspec.structs.replace(record, earlier=kept), superseded


def check_owner(record: WorkloadRecord, owned_by: str) -> None:
    """Refuse an action asked only for a user's own records (``WorkloadAction.owned_by``) on someone else's."""
    if owned_by and record.created_by != owned_by:
        raise Forbidden(own_only(owned_by, record.spec.project, record.created_by))


def act(record: WorkloadRecord, action: Action, version: str, op_id: str, now: float) -> WorkloadRecord | None:
    """Apply a user action; None when it changes nothing (already in that desired state)."""
    spec = record.spec
    what = f"{spec.kind} {spec.name!r}"
    if spec.state == "deleted":
        if action == "delete":
            return None
        raise Conflict(f"cannot {action} {what}: it is being deleted")
    if action == "delete":
        return _bump(record, msgspec.structs.replace(spec, state="deleted"), "delete", op_id, now)
    if spec.kind != "tenant":
        raise InvalidInput(f"cannot {action} {what}: only tenant clusters can {action}")
    if action == "sleep":
        if spec.state == "sleeping":
            return None
        return _bump(record, msgspec.structs.replace(spec, state="sleeping"), "sleep", op_id, now, activity=False)
    if action == "wake":
        if spec.state == "running":
            return None
        return _bump(record, msgspec.structs.replace(spec, state="running"), "wake", op_id, now)
    if action == "upgrade":
        if not version:
            raise InvalidInput("upgrade needs a version")
        target = check_upgrade(spec.version, version, spec.name)
        return _bump(record, msgspec.structs.replace(spec, version=target), "upgrade", op_id, now)
    assert_never(action)  # a new Action must be handled above (mypy says so)


def repeats_pending(record: WorkloadRecord, action: Action, version: str) -> bool:
    """True when ``action`` asks again for what the record's latest operation asked, and that is not applied
    yet: a client retrying after a lost answer. It changes nothing; its command must only be sure to be out."""
    if in_sync(record) or record.operation != action:
        return False
    if action != "upgrade":
        return True
    try:
        return bool(version) and check_version(version) == record.spec.version
    except InvalidInput:
        return False


def with_members(
    record: WorkloadRecord, membership: Membership, op_id: str, now: float, owner_role: Role | None = None
) -> WorkloadRecord | None:
    members = members_for(membership, record.created_by, owner_role)
    if members == record.spec.members or record.spec.state == "deleted":
        return None
    return _bump(record, msgspec.structs.replace(record.spec, members=members), "access", op_id, now, activity=False)


# --- what an agent says, checked against what the platform knows ----------------------------------
def agent_time(at: float, now: float) -> float:
    """A time an agent reported, as the platform keeps it: never later than the platform's clock (an agent's
    clock, or a hostile agent, must not put an object's activity or result in the future)."""
    return min(max(at, 0.0), now)


def result_problem(record: WorkloadRecord, result: CommandResult, cluster: str) -> str | None:
    """Why ``result``, arriving on ``cluster``'s subject, must not touch ``record`` (None: it may).

    A result only ever concerns an object placed on the sending cluster, at a generation the platform sent
    (never above the desired one: a generation from the future would mark every later change applied)."""
    if record.spec.cluster != cluster:
        return f"it lives on cluster {record.spec.cluster!r}, not {cluster!r}"
    if result.generation > record.generation:
        return f"generation {result.generation} was never sent (the desired generation is {record.generation})"
    if result.generation == record.generation and not (
        result.op_id == record.op_id or result.op_id.startswith(RESYNC_PREFIX)
    ):
        return f"operation {result.op_id!r} was never sent for generation {record.generation}"
    return None


def observe(record: WorkloadRecord, result: CommandResult, now: float) -> tuple[WorkloadRecord, bool]:
    """Fold an agent's result in. Returns (record, gone): gone when a delete is done.

    The caller has checked ``result_problem``; times are clamped to ``now`` and free text is clipped."""
    at = agent_time(result.at, now)
    if result.ok:
        return _observe_success(record, result, at or now, now)
    if result.generation < record.generation:
        return record, False  # a stale failure: a newer generation is on its way
    failure = Failure(
        generation=result.generation,
        reason=clip(result.reason, MAX_REASON) or "ApplyFailed",
        message=clip(result.message),
        at=at or now,
    )
    return with_conditions(msgspec.structs.replace(record, failure=failure, updated_at=now), now), False


def _observe_success(
    record: WorkloadRecord, result: CommandResult, at: float, now: float
) -> tuple[WorkloadRecord, bool]:
    if record.observed is not None and record.observed.generation > result.generation:
        return record, False  # an older result arriving late
    settled = result.settled
    observed = Observed(
        generation=result.generation,
        state=result.state,
        version=clip(result.version, 64),
        at=at,
        settled=settled,
        reason="" if settled else clip(result.reason, 128),
        message="" if settled else clip(result.message, 1000),
    )
    failure = record.failure if record.failure and record.failure.generation > result.generation else None
    new = msgspec.structs.replace(record, observed=observed, failure=failure, updated_at=now)
    # A delete is done when the cluster says its objects are gone, not when their deletion began.
    gone = result.state == "deleted" and result.generation >= record.generation and settled
    return with_conditions(new, now), gone


def result_outcome(record: WorkloadRecord, result: CommandResult) -> Literal["applied", "failed"] | None:
    """What a result counts as, for the record it was folded into: a failure of the record's generation
    counts whatever ``applied`` says (agents report every failure with ``applied=False``: nothing was done);
    a success only when it was really applied (not a redelivery found already done)."""
    if result.generation != record.generation:
        return None
    if not result.ok:
        return "failed"
    return "applied" if result.applied else None


def confirm_deleted(record: WorkloadRecord, now: float) -> WorkloadRecord:
    """The cluster shows the object gone (an inventory without it): make the record a tombstone (the earlier
    operations it remembered are superseded by the deletion)."""
    observed = Observed(generation=record.generation, state="deleted", at=now)
    return with_conditions(msgspec.structs.replace(record, observed=observed, updated_at=now, earlier=()), now)


ACTIVITY_RESOLUTION = 1.0
"""Seconds by which reported activity must pass the recorded one to be written. A create or a wake records
its own activity; the agent's apply of it, reported by the next inventory milliseconds later, is the same
event, and writing it cost one fsynced write per tenant (a restart at 10,000 agents right after 1,000 creates:
964 of the 1,964 record writes, in the inventories' one-at-a-time pass). Auto-sleep and the shown "last
activity" work in minutes."""


def touch(record: WorkloadRecord, last_activity: float, now: float) -> WorkloadRecord | None:
    """The record with the activity an agent reported (clamped to ``now``); None when it is not newer (by
    ``ACTIVITY_RESOLUTION``), or
    while the record asks its cluster for a generation (``asks``: written again, it would be a copy of the
    command at a later position of the stream; the next inventory records the activity)."""
    last_activity = agent_time(last_activity, now)
    if not newer_activity(last_activity, record) or asks(record):
        return None
    return msgspec.structs.replace(record, last_activity=last_activity)


def activity_updates(desired: Iterable[WorkloadRecord], items: Iterable[InventoryItem], now: float) -> dict[str, float]:
    """Record key -> newer last activity, for the objects of ``desired`` (one cluster's records) the
    inventory reports busier than recorded. Items for anything else are ignored: an inventory only ever
    touches records placed on the sending cluster."""
    want = {ref_of(r.spec): r for r in desired if not is_tombstone(r)}
    out: dict[str, float] = {}
    for item in items:
        record = want.get(ref_of(item))
        if record is None:
            continue
        at = agent_time(item.last_activity, now)
        if newer_activity(at, record):
            out[workload_key(record.spec)] = at
    return out


def newer_activity(at: float, record: WorkloadRecord) -> bool:
    """Whether activity at ``at`` is news to ``record``: at least ``ACTIVITY_RESOLUTION`` after what it holds."""
    return at >= record.last_activity + ACTIVITY_RESOLUTION


def due_for_sleep(record: WorkloadRecord, now: float) -> bool:
    return (
        record.spec.kind == "tenant"
        and record.spec.state == "running"
        and record.sleep_after > 0
        and now - record.last_activity > record.sleep_after
    )


# --- phases and conditions --------------------------------------------------------------------
def in_sync(record: WorkloadRecord) -> bool:
    return record.observed is not None and record.observed.generation >= record.generation


def asks(record: WorkloadRecord) -> bool:
    """Whether ``record`` asks its cluster's agent to apply its generation (``agent.commands.command_of``):
    neither observed nor failed at it.

    Per cluster, the agent applies commands in the order of the stream, which is the order the platform
    accepted them in, as long as a record that asks is only ever written by the write that accepted its
    generation. A second one at the same generation (the same record with a result of an earlier generation
    folded in, or with activity) is a copy of the command at a later position: if the first is pushed out of
    the object's history (the bucket keeps 5 records per object) before the agent reaches it, the agent
    meets the command first at the copy, after commands accepted later (seen in the fault suite: one
    tenant's generation applied after another tenant's four later ones). So nothing writes such a copy
    (``services.lifecycle.store.Desired.write`` refuses it); the only writes that ask again at a later
    position are resync's deliberate ones over a record that no longer asks (``resend``)."""
    return not in_sync(record) and not (record.failure is not None and record.failure.generation >= record.generation)


def phase(record: WorkloadRecord) -> Phase:
    spec, obs = record.spec, record.observed
    if spec.state == "deleted":
        return "Deleting"
    if record.failure is not None and record.failure.generation >= record.generation:
        return "Failed"
    if obs is None:
        return "Pending"
    if in_sync(record):
        return _applied_phase(record, obs)
    if spec.state == "running" and obs.version and spec.version != obs.version:
        return "Upgrading"
    if spec.state == "sleeping":
        return "Sleeping"
    return "Pending"


def observed_phase(record: WorkloadRecord) -> Phase | None:
    """The phase the cluster has put the object in, by what its agent reported alone (None before it reported
    anything): what the public events announce. ``phase`` leans to the desired state instead (a requested
    sleep shows ``Sleeping`` at once); a request is in the audit trail, and an event says the cluster did it."""
    if record.failure is not None and record.failure.generation >= record.generation:
        return "Failed"
    obs = record.observed
    if obs is None:
        return None
    if obs.state == "deleted":
        return "Deleting"
    return _applied_phase(record, obs)


def _applied_phase(record: WorkloadRecord, obs: Observed) -> Phase:
    """The phase of a record whose generation the agent applied."""
    if obs.state == "sleeping":
        return "Sleeping"
    # Applied, but a tenant is Ready only once its control plane is (the agent reports when it is).
    if obs.settled:
        return "Ready"
    return "Upgrading" if record.operation == "upgrade" else "Pending"


def with_conditions(record: WorkloadRecord, now: float) -> WorkloadRecord:
    p = phase(record)
    conditions = set_condition(record.conditions, _ready_condition(record, p, now))
    synced = in_sync(record)
    conditions = set_condition(
        conditions,
        Condition(
            type="Synced",
            status="True" if synced else "False",
            reason="InSync" if synced else "CommandPending",
            message="observed state matches desired" if synced else "the command waits for the cluster's agent",
            last_transition_time=now,
        ),
    )
    return msgspec.structs.replace(record, conditions=conditions, phase=p)


def _ready_condition(record: WorkloadRecord, p: Phase, now: float) -> Condition:
    if record.failure is not None and p == "Failed":
        return Condition(
            type="Ready",
            status="False",
            reason=record.failure.reason,
            message=record.failure.message,
            last_transition_time=now,
        )
    if p in ("Ready", "Sleeping"):
        return Condition(
            type="Ready",
            status="True" if p == "Ready" else "False",
            reason="Applied" if p == "Ready" else "Asleep",
            message=f"generation {record.generation} applied",
            last_transition_time=now,
        )
    if record.observed is not None and in_sync(record) and not record.observed.settled:
        return Condition(
            type="Ready",
            status="False",
            reason=record.observed.reason or "NotReady",
            message=record.observed.message or f"generation {record.generation} applied; waiting for it to be ready",
            last_transition_time=now,
        )
    return Condition(
        type="Ready",
        status="False",
        reason=p,
        message=f"waiting for the agent to apply {record.operation} (generation {record.generation})",
        last_transition_time=now,
    )


# --- reconciliation ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Resync:
    resend: list[WorkloadRecord]
    """Desired objects missing or stale on the cluster: send again."""
    orphans: list[InventoryItem]
    """Objects on the cluster the platform does not want: delete."""
    done: list[WorkloadRecord]
    """Desired deletions the cluster already shows done: forget the record."""
    held_back: bool
    """True when deletes were held back because the desired state is empty (grace period)."""
    deferred: int = 0
    """Re-sends and deletes left for the next resync (over ``max_resends`` / ``max_orphans``)."""


def reconcile(
    desired: list[WorkloadRecord],
    inventory: Iterable[InventoryItem],
    *,
    empty_since: float | None,
    now: float,
    grace: float,
    max_resends: int = MAX_RESENDS,
    max_orphans: int = MAX_ORPHAN_DELETES,
) -> Resync:
    """What one inventory asks for: at most ``max_resends`` re-sends and ``max_orphans`` deletes, each object
    at most once (an inventory naming one object twice counts once)."""
    have = {ref_of(i): i for i in inventory}
    want = {ref_of(r.spec): r for r in desired}
    resend, done = _compare(want, have)
    # An object already on its way out (the cluster reports it deleted) needs no delete of ours.
    orphans = [i for k, i in have.items() if k not in want and i.state != "deleted"]
    # An empty desired state never deletes everything at once.
    held_back = bool(orphans) and _hold_back(desired, empty_since, now, grace)
    if held_back:
        orphans = []
    deferred = max(0, len(resend) - max_resends) + max(0, len(orphans) - max_orphans)
    return Resync(
        resend=resend[:max_resends], orphans=orphans[:max_orphans], done=done, held_back=held_back, deferred=deferred
    )


def _compare(
    want: Mapping[WorkloadRef, WorkloadRecord], have: Mapping[WorkloadRef, InventoryItem]
) -> tuple[list[WorkloadRecord], list[WorkloadRecord]]:
    """(what to send again: missing or older on the cluster; deletions the cluster shows done)."""
    resend, done = [], []
    for k, r in want.items():
        item = have.get(k)
        if item is None and r.spec.state == "deleted":
            done.append(r)
        elif item is None or item.generation < r.generation:
            resend.append(r)
    return resend, done


def _hold_back(desired: list[WorkloadRecord], empty_since: float | None, now: float, grace: float) -> bool:
    """True while deletes wait: the desired state is empty, and not yet for ``grace`` seconds."""
    if any(r.spec.state != "deleted" for r in desired):
        return False
    return empty_since is None or now - empty_since < grace


def orphan_spec(item: InventoryItem, cluster: str) -> WorkloadSpec:
    return WorkloadSpec(kind=item.kind, project=item.project, name=item.name, cluster=cluster, state="deleted")


def deleted_since(record: WorkloadRecord, seen_at: float) -> bool:
    """Whether ``record`` is a tombstone whose deletion the cluster reported at or after ``seen_at`` (when an
    inventory was taken): that inventory predates the deletion, so an object it lists under the name is the one
    since deleted, not an orphan. Deciding otherwise wrote a second deletion of it (a generation no operation
    asked for) when a connect's inventory crossed a delete in flight."""
    return is_tombstone(record) and record.observed is not None and record.observed.at >= seen_at


def orphan_deletion(
    item: InventoryItem, cluster: str, previous: WorkloadRecord | None, op_id: str, now: float
) -> WorkloadRecord:
    """The record that asks ``cluster``'s agent to delete an object the platform does not want: a deletion
    under that cluster's key, at a generation above both the object's and the name's last record (agents
    apply a generation at most once, and a name's generations never repeat). Once the cluster confirms it,
    it is a tombstone like any other."""
    last = previous.generation if previous is not None else 0
    record = WorkloadRecord(
        spec=orphan_spec(item, cluster),
        generation=min(max(item.generation, last) + 1, MAX_GENERATION),
        op_id=op_id,
        operation="resync",
        created_by="lifecycle",
        created_at=now,
        updated_at=now,
    )
    return with_conditions(record, now)


def resend(record: WorkloadRecord, now: float, seen_at: float = 0.0) -> WorkloadRecord | None:
    """What an inventory lacking ``record``'s generation asks to write, now that the agent follows the desired
    state (it applies every record of its cluster not observed yet, in order): nothing while the record waits
    for its agent (its consumer holds it, and a result comes before the ack); the record with nothing observed
    when the cluster lost what it had reported (observed, yet missing: the agent applies it again); the record
    without its failure after a failure (one more try, as every inventory gave before; Pending meanwhile).
    ``seen_at``: when the inventory was taken; a result observed since is newer than what it says."""
    if in_sync(record):
        if record.observed is not None and record.observed.at >= seen_at:
            return None
        return with_conditions(msgspec.structs.replace(record, observed=None, updated_at=now), now)
    if record.failure is not None and record.failure.generation >= record.generation:
        # Without the failure: a record that still carries it is the agent's own report coming back, which
        # the agent does not apply again (it would retry every failure at once, not once per inventory).
        return with_conditions(msgspec.structs.replace(record, failure=None, updated_at=now), now)
    return None
