"""``View``'s rule, without a bus: the newest revision wins, whichever way a write arrives (the process's own
acknowledgement or the bucket's watch), and the watch's echo of an own write changes nothing."""

from __future__ import annotations

from services.bus.records import KEPT_AHEAD, View


def view() -> View[str]:
    return View[str]()


def test_the_watch_applies_in_order_and_ignores_what_it_delivered_before() -> None:
    v = view()
    v.watched("a", 1, lambda: "a1")
    v.watched("b", 2, lambda: "b2")
    v.watched("a", 3, lambda: None)  # a deletion
    assert v.items() == {"b": "b2"} and v.position == 3
    v.watched("a", 1, lambda: "a1")  # delivered again by a watch resumed from an earlier place
    assert v.items() == {"b": "b2"}


def test_an_own_write_shows_at_once_and_its_echo_changes_nothing() -> None:
    v = view()
    v.watched("a", 1, lambda: "a1")
    v.wrote("a", "a5", 5)
    assert v.get("a") == "a5"
    v.watched("b", 4, lambda: "b4")  # the watch still behind the write
    assert v.get("a") == "a5"

    def never() -> str:
        raise AssertionError("the echo of an own write is not decoded")

    v.watched("a", 5, never)
    assert v.get("a") == "a5"
    v.watched("a", 6, lambda: "a6")  # another process wrote after
    assert v.get("a") == "a6"


def test_an_older_delivery_never_overwrites_a_newer_own_write_or_removal() -> None:
    v = view()
    v.watched("a", 1, lambda: "a1")
    v.wrote("a", None, 7)  # removed by this process
    v.watched("a", 3, lambda: "a3")  # an older write of another process, delivered after
    assert v.get("a") is None
    v.wrote("a", "a9", 9)
    v.wrote("a", "a8", 8)  # acknowledgements in another order than the writes
    assert v.get("a") == "a9"
    v.watched("a", 8, lambda: "a8")
    assert v.get("a") == "a9"


def test_an_own_write_the_watch_has_passed_is_not_applied_again() -> None:
    v = view()
    v.watched("a", 4, lambda: "a4")  # the watch brought a newer write before this process's ack of 2
    v.wrote("a", "a2", 2)
    assert v.get("a") == "a4"


def test_keep_leaves_records_out_and_own_writes_ahead_are_bounded() -> None:
    v = View[str](lambda key, record: not record.startswith("x"))
    v.watched("a", 1, lambda: "a1")
    v.watched("a", 2, lambda: "x2")
    assert v.values() == []
    for n in range(KEPT_AHEAD + 10):
        v.wrote(f"k{n}", "v", 10 + n)
    v.watched("z", 10 + KEPT_AHEAD + 20, lambda: "z")
    v.wrote("last", "v", 10 + KEPT_AHEAD + 30)  # forgets those the watch has passed
    assert len(v._ahead) == 1


def test_under_reads_the_records_of_one_first_token_as_they_change() -> None:
    v = view()
    v.watched("c1.a", 1, lambda: "a1")
    v.watched("c10.a", 2, lambda: "x")  # another token that starts alike
    v.wrote("c1.b", "b3", 3)
    assert v.under("c1") == {"c1.a": "a1", "c1.b": "b3"} and v.under("c10") == {"c10.a": "x"}
    v.watched("c1.a", 4, lambda: None)
    v.wrote("c10.a", None, 5)
    assert v.under("c1") == {"c1.b": "b3"} and v.under("c10") == {} and v.under("c2") == {}
    kept = View[str](lambda key, record: record != "gone")
    kept.watched("c1.a", 1, lambda: "a1")
    kept.watched("c1.a", 2, lambda: "gone")  # left out as if removed
    assert kept.under("c1") == {} and kept.values() == []
