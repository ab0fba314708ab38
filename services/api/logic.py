"""Pure views: bus records -> API models, and error kinds -> HTTP statuses."""

from __future__ import annotations

import math
import shlex
from datetime import UTC, datetime

from schemas.api import (
    CapacityOut,
    ClusterOut,
    ConditionOut,
    ControlPlaneOut,
    DesiredOut,
    MemberOut,
    ObservedOut,
    ProjectOut,
    QuotaModel,
    RbacMemberOut,
    TeamOut,
    UsageOut,
    UserOut,
    WorkloadOut,
)
from schemas.errors import Overloaded, TetherError
from schemas.messages import (
    ClusterHealth,
    ClusterRecord,
    Condition,
    Membership,
    Presence,
    ProjectRecord,
    TeamRecord,
    UserRecord,
    WorkloadRecord,
)

HTTP_STATUS = {"400": 400, "401": 401, "403": 403, "404": 404, "409": 409, "410": 410, "429": 429, "503": 503}
UNAVAILABLE_RETRY_AFTER = 1
"""Seconds a caller is told to wait after a 503: what stays unavailable longest is a JetStream election (4-9 s),
and a client that asks again each second hears the answer within a second of it."""


def http_status(error: TetherError) -> int:
    return HTTP_STATUS.get(error.code, 500)


def retry_after(error: TetherError) -> int | None:
    """The ``Retry-After`` seconds for an error worth trying again (a busy service says how long), else None."""
    if isinstance(error, Overloaded):
        return max(1, math.ceil(error.retry_after))
    return UNAVAILABLE_RETRY_AFTER if error.retryable else None


LATEST = 4_102_444_800.0
"""2100-01-01: a stored time past it (written before agents' times were bounded) is shown as unknown."""


def ts(seconds: float) -> datetime | None:
    """A stored time for people; None when unset or not a time at all (a listing never fails on one)."""
    if not seconds or not 0 < seconds <= LATEST:  # also NaN
        return None
    return datetime.fromtimestamp(seconds, UTC)


def _condition(c: Condition) -> ConditionOut:
    return ConditionOut(
        type=c.type,
        status=c.status,
        reason=c.reason,
        message=c.message,
        last_transition_time=ts(c.last_transition_time),
    )


def may_see_cluster(scope: list[ProjectRecord] | None, cluster: ClusterRecord) -> bool:
    """May a user whose projects are ``scope`` (None: a platform admin) see ``cluster``? Only the clusters one
    of their projects may use."""
    return scope is None or any(p.allows(cluster) for p in scope)


def cluster_view(
    record: ClusterRecord, presence: Presence | None, scope: list[ProjectRecord] | None = None
) -> ClusterOut:
    """One cluster as people see it: registry facts plus health's presence; tenant control planes only of the
    projects in ``scope`` (None: all, for platform admins)."""
    projects = None if scope is None else {p.name for p in scope}
    online = bool(presence and presence.online and record.state == "connected")
    health = presence.health if presence else ClusterHealth()  # nothing heard yet: nothing to show
    conditions = [_condition(c) for c in presence.conditions] if presence else []
    return ClusterOut(
        name=record.name,
        display_name=record.display_name or record.name,
        description=record.description,
        labels=dict(record.labels),
        local=record.local,
        state=record.state,
        online=online,
        last_seen=ts(presence.last_seen) if presence else None,
        connected_since=ts(presence.connected_since) if presence and online else None,
        agent_version=health.agent_version or record.agent_version,
        kubernetes_version=health.kubernetes_version or record.kubernetes_version,
        driver=health.driver or record.driver,
        node_count=health.nodes_total,
        nodes_ready=health.nodes_ready,
        capacity=CapacityOut(cpu=health.capacity.cpu, memory=health.capacity.memory),
        conditions=conditions,
        created_at=ts(record.created_at),
        control_planes=[
            ControlPlaneOut.of(c) for c in health.control_planes if projects is None or c.project in projects
        ],
    )


def agent_command(nats_url: str, token: str, ca_file: str = "") -> str:
    command = f"tether agent run --server {shlex.quote(nats_url)} --token {shlex.quote(token)}"
    return command + (f" --ca-file {shlex.quote(ca_file)}" if ca_file else "")


def workload_view(r: WorkloadRecord) -> WorkloadOut:
    spec, obs = r.spec, r.observed
    return WorkloadOut(
        kind=spec.kind,
        name=spec.name,
        project=spec.project,
        cluster=spec.cluster,
        version=spec.version,
        phase=r.phase,  # type: ignore[arg-type]
        desired=DesiredOut(
            generation=r.generation,
            state=spec.state,
            version=spec.version,
            cpu=spec.resources.cpu,
            memory=spec.resources.memory,
            members=[RbacMemberOut(subject=m.subject, access=m.access) for m in spec.members],
            operation=r.operation,
            op_id=r.op_id,
        ),
        observed=ObservedOut(
            generation=obs.generation,
            state=obs.state,
            version=obs.version,
            at=ts(obs.at),
            settled=obs.settled,
            reason=obs.reason,
        )
        if obs
        else None,
        in_sync=obs is not None and obs.generation >= r.generation,
        failure=f"{r.failure.reason}: {r.failure.message}" if r.failure and r.phase == "Failed" else None,
        conditions=[_condition(c) for c in r.conditions],
        sleep_after=r.sleep_after,
        last_activity=ts(r.last_activity),
        created_by=r.created_by,
        created_at=ts(r.created_at),
    )


def user_view(u: UserRecord) -> UserOut:
    return UserOut(
        name=u.name, email=u.email, platform_admin=u.platform_admin, created_at=ts(u.created_at), disabled=u.disabled
    )


def team_view(t: TeamRecord) -> TeamOut:
    return TeamOut(name=t.name, members=list(t.members), created_at=ts(t.created_at))


def usage(project: str, records: list[WorkloadRecord]) -> UsageOut:
    live = [r for r in records if r.spec.project == project and r.spec.state != "deleted"]
    return UsageOut(
        tenants=sum(r.spec.kind == "tenant" for r in live),
        spaces=sum(r.spec.kind == "space" for r in live),
        cpu=sum(r.spec.resources.cpu for r in live),
        memory=sum(r.spec.resources.memory for r in live),
    )


def project_view(p: ProjectRecord, m: Membership, records: list[WorkloadRecord], my_role: str | None) -> ProjectOut:
    members = [MemberOut(kind="user", name=n, role=role) for n, role in sorted(m.users.items())]
    members += [MemberOut(kind="team", name=n, role=role) for n, role in sorted(m.teams.items())]
    q = p.quota
    return ProjectOut(
        name=p.name,
        display_name=p.display_name,
        clusters=list(p.clusters),
        cluster_selector=dict(p.cluster_selector),
        quota=QuotaModel(tenants=q.tenants, spaces=q.spaces, cpu=q.cpu, memory=q.memory),
        members=members,
        usage=usage(p.name, records),
        my_role=my_role,  # type: ignore[arg-type]
        created_by=p.created_by,
        created_at=ts(p.created_at),
    )
