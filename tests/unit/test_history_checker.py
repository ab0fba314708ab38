"""The fault suite's history checker (tests/chaos/history.py) on made-up histories: it must still fail."""

from __future__ import annotations

from typing import Any

from tests.chaos.history import Acked, History

KEY = "tenant/p/t1"


def acked(generation: int, sent: float, cluster: str = "c1", key: str = KEY) -> Acked:
    return Acked(
        key=key,
        cluster=cluster,
        generation=generation,
        op_id=f"op{generation}",
        operation="sleep",
        sent=sent,
        acked=sent + 0.01,
    )


def applied(generation: int, name: str = "t1") -> dict[str, Any]:
    return {"op_id": f"op{generation}", "kind": "tenant", "project": "p", "name": name, "generation": generation}


def check(acks: list[Acked], ledger: list[dict[str, Any]], final_generation: int) -> tuple[History, list[str]]:
    """The checker's verdict on one cluster ``c1`` whose object ``KEY`` ends at ``final_generation``."""
    history = History(acked=acks)
    history._states = {"c1": {"objects": {KEY: {"generation": final_generation, "state": "running", "version": "v1"}}}}
    desired = {KEY: {"cluster": "c1", "desired": {"generation": final_generation, "state": "running", "version": "v1"}}}
    return history, history.check({"c1": ledger}, desired)


def test_a_sound_history_passes() -> None:
    history, problems = check([acked(1, 1.0), acked(2, 2.0)], [applied(1), applied(2)], 2)
    assert problems == []
    assert history.coalesced == []


def test_generations_superseded_while_away_are_coalesced_not_lost() -> None:
    # 2, 3 and 4 were issued while the cluster was away; it came back and applied 5, the newest.
    acks = [acked(g, float(g)) for g in range(1, 6)]
    history, problems = check(acks, [applied(1), applied(5)], 5)
    assert problems == []
    assert [a.generation for a in history.coalesced] == [2, 3, 4]


def test_a_generation_never_followed_by_a_newer_apply_is_lost() -> None:
    acks = [acked(1, 1.0), acked(2, 2.0), acked(3, 3.0)]
    _, problems = check(acks, [applied(1), applied(2)], 3)
    assert any(p.startswith("lost: tenant/p/t1 generation 3") for p in problems), problems
    # The newest generation missing is also a final state the platform does not have.
    _, problems = check(acks, [applied(1), applied(2)], 2)
    assert problems == ["lost: tenant/p/t1 generation 3 (sleep, op op3) on c1"]


def test_a_newer_apply_on_another_cluster_does_not_cover_a_lost_one() -> None:
    acks = [acked(1, 1.0), acked(2, 2.0)]
    history = History(acked=acks)
    history._states = {"c1": {"objects": {}}, "c2": {"objects": {}}}
    problems = history.check({"c1": [applied(1)], "c2": [applied(3)]}, {})
    assert problems == ["lost: tenant/p/t1 generation 2 (sleep, op op2) on c1"]


def test_a_generation_applied_twice_is_doubled() -> None:
    _, problems = check([acked(1, 1.0), acked(2, 2.0)], [applied(1), applied(2), applied(2)], 2)
    assert any(p.startswith("applied twice: tenant/p/t1 generation 2") for p in problems), problems


def test_a_decreasing_generation_is_out_of_order() -> None:
    _, problems = check([acked(1, 1.0), acked(2, 2.0), acked(3, 3.0)], [applied(1), applied(3), applied(2)], 3)
    assert "out of order on c1: tenant/p/t1 generation 2 after 3" in problems


def test_across_objects_a_command_acknowledged_before_another_was_sent_is_applied_first() -> None:
    other = "tenant/p/t2"
    acks = [acked(1, 1.0), acked(1, 2.0, key=other)]
    history = History(acked=acks)
    history._states = {"c1": {"objects": {}}}
    problems = history.check({"c1": [applied(1, "t2"), applied(1)]}, {})
    assert any("applied before tenant/p/t1 generation 1" in p for p in problems), problems
