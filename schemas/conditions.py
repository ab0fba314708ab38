"""Keeping a list of Kubernetes-style conditions."""

from __future__ import annotations

import msgspec

from schemas.messages import Condition


def set_condition(conditions: tuple[Condition, ...], new: Condition) -> tuple[Condition, ...]:
    """Replace the condition of the same type; keep its transition time when the status is unchanged."""
    out = []
    found = False
    for c in conditions:
        if c.type == new.type:
            found = True
            if c.status == new.status:
                new = msgspec.structs.replace(new, last_transition_time=c.last_transition_time)
            out.append(new)
        else:
            out.append(c)
    if not found:
        out.append(new)
    return tuple(out)
