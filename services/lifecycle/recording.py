"""What an agent's result does to its record: the pure half of ``results`` (no bus, no clock of its own).

An agent asks lifecycle to record each result and acknowledges its command only on the answer, and asks
again when no answer came (a lost reply, a lifecycle outage). So every decision here must be safe to make
twice: a result already in the record is answered ``already`` and written no second time, one for an
operation a newer one superseded or for an object no longer there is answered so (the agent acks it and
moves on), and one that could never have come from an honest agent of that cluster is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from schemas.messages import CommandResult, Failure, Observed, ResultOutcome, Unseen, WorkloadRecord
from services.lifecycle import logic


@dataclass(frozen=True)
class Decision:
    """What to do with one result: write ``new`` over the record read (compare-and-set), or nothing."""

    outcome: ResultOutcome
    new: WorkloadRecord | None = None
    later: bool = False
    """Nothing written: the record asks for a newer generation (``ResultRecorded.later``)."""
    gone: bool = False
    """``new`` ends a delete: the object is gone from its cluster."""
    detail: str = ""
    superseded: tuple[Unseen, ...] = ()
    """Earlier operations ``new`` ends as superseded (its cluster applied this generation without seeing theirs)."""


class Refused(Exception):
    """A result no honest agent of the calling cluster sends (a generation or operation never sent to it)."""


def decide(found: WorkloadRecord | None, result: CommandResult, cluster: str, now: float) -> Decision:
    """The decision for ``result``, sent by ``cluster``'s agent, about the record ``found`` (None: no record).

    Raises ``Refused`` for a result about a generation or operation the platform never sent that cluster.
    ``result.cluster`` is the caller's to check against ``cluster`` first."""
    if found is None:
        return Decision("unknown", detail="no such object (deleted, or never the platform's)")
    if found.spec.cluster != cluster:
        # Deleted here and placed again elsewhere: another cluster's record now (which one is not the caller's
        # business: an agent must not learn where other clusters' objects are).
        return Decision("unknown", detail="no such object on this cluster")
    problem = logic.result_problem(found, result, cluster)
    if problem is not None:
        raise Refused(problem)
    if logic.is_tombstone(found):
        return Decision("already", detail="deleted")
    if result.generation < found.generation and logic.asks(found):
        # Folded in, it would be a copy of the waiting command at a later position (``logic.asks``). The
        # agent names this generation in the object's next result, so its operation still ends applied.
        return Decision(
            "superseded",
            detail=f"generation {found.generation} is wanted now; not recorded until it is reported",
            later=True,
        )
    new, gone = logic.observe(found, result, now)
    new, earlier = logic.settle_earlier(new, result)
    superseded = result.generation < found.generation
    outcome: ResultOutcome = "superseded" if superseded else "recorded"
    detail = f"generation {found.generation} is wanted now" if superseded else ""
    if same_news(found, new):
        return Decision("superseded" if superseded else "already", detail=detail)
    return Decision(outcome, new=new, gone=gone, detail=detail, superseded=earlier)


def same_news(old: WorkloadRecord, new: WorkloadRecord) -> bool:
    """True when ``new`` says nothing ``old`` did not: the same observation, failure and operations waiting, but
    for when the agent said it (a repeated result is not written again)."""
    return (
        _same_but_when(old.observed, new.observed)
        and _same_but_when(old.failure, new.failure)
        and (old.earlier == new.earlier)
    )


def _same_but_when(old: Observed | Failure | None, new: Observed | Failure | None) -> bool:
    if old is None or new is None:
        return old is new
    # One copy, not two: this runs on every result.
    return type(old) is type(new) and old == msgspec.structs.replace(new, at=old.at)
