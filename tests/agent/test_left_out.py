"""Results lifecycle left out of the record while a newer generation waited go with the object's next result."""

from __future__ import annotations

from agent.command_loop import LeftOut
from schemas.messages import MAX_EARLIER_RESULTS, CommandResult, ResultRecorded

LATER = ResultRecorded(outcome="superseded", detail="generation 9 is wanted now", later=True)


def result(generation: int, name: str = "t1") -> CommandResult:
    return CommandResult(
        op_id=f"op-{generation}", cluster="c1", kind="tenant", project="p1", name=name, generation=generation, ok=True
    )


def test_left_out_generations_go_with_the_next_result_of_that_object_only() -> None:
    left = LeftOut()
    assert left.attach(result(3)).earlier == ()
    left.note(result(3), LATER)
    left.note(result(4), LATER)
    assert left.attach(result(5)).earlier == (3, 4)
    assert left.attach(result(1, name="t2")).earlier == (), "another object's result carries none"
    left.note(result(5), ResultRecorded(outcome="recorded"))
    assert left.attach(result(6)).earlier == (), "taken with the result that carried them"


def test_an_unanswered_result_keeps_them_and_memory_is_bounded() -> None:
    left = LeftOut(limit=2)
    left.note(result(3), LATER)
    # No answer (a timeout): nothing noted, the next attempt carries them again.
    assert left.attach(result(5)).earlier == (3,)
    for g in range(10, 10 + MAX_EARLIER_RESULTS + 5):
        left.note(result(g), LATER)
    assert len(left.attach(result(99)).earlier) == MAX_EARLIER_RESULTS
    left.note(result(1, name="a"), LATER)
    left.note(result(1, name="b"), LATER)
    assert left.attach(result(99)).earlier == (), "the oldest object went first"
