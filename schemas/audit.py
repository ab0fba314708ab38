"""The audit trail: who changed what, when, with what result (stream ``AUDIT``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import Message


class AuditRecord(Message, frozen=True, tag="audit-record.v1"):
    """One mutating API call (``tether.audit.api``) or one command sent to an agent
    (``tether.audit.cmd.<cluster>``)."""

    kind: Literal["api", "command"]
    at: float
    user: str
    """Who: the API caller ('' when unauthenticated), or the user whose operation issued the command."""
    action: str
    """``POST /api/v1/clusters`` for API calls; the operation (create, sleep, ...) for commands."""
    target: str = ""
    """What: the path's object, or ``<kind>/<project>/<name>``."""
    cluster: str = ""
    result: str = ""
    """HTTP status for API calls; ``issued`` for commands."""
    trace_id: str = ""
    op_id: str = ""
    call: str = ""
    """For a command: the API call that issued it (then that call has no ``api`` record of its own: one
    record per call and command)."""


class AuditOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["api", "command"]
    at: datetime
    user: str
    action: str
    target: str
    cluster: str
    result: str
    trace_id: str
    op_id: str
    call: str = ""


class AuditListOut(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    items: list[AuditOut] = Field(description="Oldest first")
