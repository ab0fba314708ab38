"""Desired-state records and what a cluster's agent reports about them, for tests that drive lifecycle's
endpoints without the API or an agent."""

from __future__ import annotations

import time

from schemas.messages import CommandResult, Membership, ProjectRecord, WorkloadCreate, WorkloadRecord
from services.lifecycle import logic


def new_tenant(op_id: str, *, project: str = "p1", name: str = "t1", cluster: str = "c1") -> WorkloadRecord:
    """The record lifecycle makes for a new tenant, made by its operation ``op_id``."""
    return logic.new_record(
        WorkloadCreate(kind="tenant", project=project, name=name, cluster=cluster, created_by="u"),
        ProjectRecord(name=project),
        cluster,
        Membership(project=project),
        time.time(),
        op_id,
    )


def report(record: WorkloadRecord, *, settled: bool = True, reason: str = "") -> CommandResult:
    """A successful result for ``record``'s generation and operation: applied, and ``settled`` (False: the
    cluster still gets there, e.g. a tenant's control plane restarting, for ``reason``)."""
    spec = record.spec
    return CommandResult(
        op_id=record.op_id,
        cluster=spec.cluster,
        kind=spec.kind,
        project=spec.project,
        name=spec.name,
        generation=record.generation,
        ok=True,
        state=spec.state,
        version=spec.version,
        at=time.time(),
        settled=settled,
        reason=reason,
    )
