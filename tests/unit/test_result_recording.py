"""What an agent's result does to its record (services.lifecycle.recording): safe to decide twice, so an
agent may ask again after a lost answer; a result for a superseded operation or a gone object is answered,
one no honest agent sends is refused."""

from __future__ import annotations

import msgspec
import pytest

from services.lifecycle import logic, recording
from tests.unit.test_lifecycle_logic import NOW, result, tenant


def test_a_result_is_recorded_once_then_answered_already() -> None:
    t = tenant()
    first = recording.decide(t, result(t), "c1", NOW)
    assert first.outcome == "recorded" and first.new is not None and not first.gone
    assert logic.in_sync(first.new)
    # The same result asked again (its answer was lost), later: nothing to write.
    again = recording.decide(first.new, result(t, at=NOW + 5), "c1", NOW + 10)
    assert (again.outcome, again.new) == ("already", None)


def test_news_about_the_same_generation_is_recorded() -> None:
    t = tenant()
    starting = recording.decide(t, result(t, settled=False, reason="ContainersNotReady"), "c1", NOW).new
    assert starting is not None and starting.observed is not None and not starting.observed.settled
    ready = recording.decide(starting, result(t), "c1", NOW + 1)
    assert ready.outcome == "recorded" and ready.new is not None and ready.new.observed is not None
    assert ready.new.observed.settled


def test_a_failure_is_recorded_once() -> None:
    t = tenant()
    failed = recording.decide(t, result(t, ok=False, reason="Boom", message="x"), "c1", NOW)
    assert failed.outcome == "recorded" and failed.new is not None and failed.new.failure is not None
    again = recording.decide(failed.new, result(t, ok=False, reason="Boom", message="x", at=NOW + 3), "c1", NOW + 4)
    assert (again.outcome, again.new) == ("already", None)


def test_a_result_for_a_superseded_operation_is_answered_so() -> None:
    t = tenant()
    slept = logic.act(t, "sleep", "", "op-sleep", NOW)
    assert slept is not None
    # The create's result arrives after the sleep was asked: the record asks for the sleep, so writing it
    # again would copy that command to a later position of the stream. Left out; the agent says it later.
    late = recording.decide(slept, result(t), "c1", NOW + 1)
    assert late == recording.Decision(
        "superseded",
        detail=f"generation {slept.generation} is wanted now; not recorded until it is reported",
        later=True,
    )
    assert recording.decide(slept, result(t, ok=False), "c1", NOW).later, "a stale failure too"
    # The sleep's result names the create's generation: the create ends with its own result, not superseded.
    done = recording.decide(slept, msgspec.structs.replace(result(slept), earlier=(t.generation,)), "c1", NOW + 2)
    assert done.outcome == "recorded" and done.new is not None and logic.in_sync(done.new)
    assert done.new.earlier == () and done.superseded == ()
    # Without it (an agent restarted meanwhile), the create ends superseded by the sleep.
    unsaid = recording.decide(slept, result(slept), "c1", NOW + 2)
    assert [u.op_id for u in unsaid.superseded] == [t.op_id]


def test_a_late_result_over_a_record_that_asks_nothing_is_recorded() -> None:
    """Over a record that no longer asks (its generation failed), a late result of an earlier generation
    is news about what the cluster is at: written (no copy of a command)."""
    t = tenant()
    slept = logic.act(t, "sleep", "", "op-sleep", NOW)
    assert slept is not None
    failed = recording.decide(slept, result(slept, ok=False, reason="Boom"), "c1", NOW).new
    assert failed is not None and not logic.asks(failed)
    late = recording.decide(failed, result(t), "c1", NOW + 1)
    assert late.outcome == "superseded" and late.new is not None and not late.later
    assert late.new.observed is not None and late.new.observed.generation == t.generation
    assert recording.decide(late.new, result(t), "c1", NOW + 2) == recording.Decision(
        "superseded", detail=f"generation {slept.generation} is wanted now"
    )


def test_results_for_gone_or_moved_objects_are_answered_unknown() -> None:
    t = tenant()
    assert recording.decide(None, result(t), "c1", NOW).outcome == "unknown"
    moved = tenant(cluster="c2")
    answer = recording.decide(moved, result(t), "c1", NOW)
    assert (answer.outcome, answer.new) == ("unknown", None)
    assert "c2" not in answer.detail, "an agent learns nothing of where other clusters' objects are"


def test_a_delete_done_is_recorded_then_already() -> None:
    t = tenant()
    deleting = logic.act(t, "delete", "", "op-del", NOW)
    assert deleting is not None
    done = recording.decide(deleting, result(deleting, state="deleted"), "c1", NOW + 1)
    assert done.outcome == "recorded" and done.gone and done.new is not None and logic.is_tombstone(done.new)
    assert recording.decide(done.new, result(deleting, state="deleted"), "c1", NOW + 2).outcome == "already"


@pytest.mark.parametrize(
    "change",
    [
        {"generation": 9},  # never sent: would mark later changes applied
        {"op_id": "op-invented"},  # an operation never sent for that generation
    ],
)
def test_results_no_honest_agent_sends_are_refused(change: dict[str, object]) -> None:
    t = tenant()
    forged = msgspec.structs.replace(result(t), **change)
    with pytest.raises(recording.Refused):
        recording.decide(t, forged, "c1", NOW)


def test_times_do_not_make_a_repeat_news() -> None:
    t = tenant()
    new = recording.decide(t, result(t, at=NOW - 1), "c1", NOW).new
    assert new is not None
    later = msgspec.structs.replace(new, updated_at=NOW + 100)
    assert recording.same_news(new, later)
    assert not recording.same_news(t, new)
