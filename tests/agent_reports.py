"""What a cluster's agent reports for a desired-state record, for tests that drive lifecycle's results endpoint
without an agent."""

from __future__ import annotations

import time

from schemas.messages import CommandResult, WorkloadRecord


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
