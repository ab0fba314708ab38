"""Whether a write may place a workload's name on a cluster (``names.may_move``), without I/O: the name's entry
and the newest record on its cluster decide, and a revision read in one desired-state bucket is never taken
for one of another."""

from __future__ import annotations

import time

from schemas.messages import WorkloadName, WorkloadRecord
from services.bus import Latest
from services.lifecycle import logic
from services.lifecycle.names import NAME_LEASE, Home, may_move
from services.lifecycle.shards import bucket_revision, revision_token
from tests.lifecycle_records import new_tenant

NOW = 1_000_000.0


def home(cluster: str, record: WorkloadRecord | None, revision: int = 7, at: float = NOW - 1) -> Home:
    newest = Latest(key=f"{cluster}.tenant.p1.t1", record=record, revision=revision) if revision else None
    return Home(WorkloadName(cluster=cluster, at=at), 3, newest)


def tombstone() -> WorkloadRecord:
    deleting = logic.act(new_tenant("0" * 32), "delete", "", "1" * 32, time.time())
    assert deleting is not None
    return logic.confirm_deleted(deleting, time.time())


def test_a_new_name_may_be_created_anywhere_and_a_revision_needs_a_record() -> None:
    assert may_move(None, "c1", None, NOW) is None
    assert may_move(None, "c1", revision_token("c1", 4), NOW) == "written meanwhile"


def test_a_live_name_is_taken_and_a_tombstone_or_marker_frees_it() -> None:
    live = new_tenant("0" * 32)
    assert may_move(home("c1", live), "c2", None, NOW) == "already exists"
    assert may_move(home("c1", live), "c1", None, NOW) == "already exists"
    assert may_move(home("c1", tombstone()), "c2", None, NOW) is None
    assert may_move(home("c1", None), "c2", None, NOW) is None, "a deletion marker left by hand"


def test_a_name_whose_record_never_arrived_waits_for_its_lease_elsewhere_only() -> None:
    pending = home("c1", None, revision=0, at=NOW - 5)
    assert may_move(pending, "c2", None, NOW) == "being created on c1"
    assert may_move(pending, "c1", None, NOW) is None, "its own cluster: the record's key decides"
    assert may_move(pending, "c2", None, NOW - 5 + NAME_LEASE + 0.1) is None


def test_a_guarded_write_needs_the_newest_revision_of_the_names_cluster() -> None:
    h = home("c1", tombstone(), revision=7)
    assert may_move(h, "c2", revision_token("c1", 7), NOW) is None
    assert may_move(h, "c2", revision_token("c1", 6), NOW) == "written meanwhile"
    other = next(c for c in ("c2", "c3", "c4") if revision_token(c, 7) != revision_token("c1", 7))
    assert may_move(h, "c2", revision_token(other, 7), NOW) == "written meanwhile", "the same number elsewhere"


def test_a_revision_token_names_its_bucket() -> None:
    token = revision_token("c1", 42)
    assert bucket_revision("c1", token) == 42
    assert bucket_revision("c2", token) is None
    assert revision_token("c1", 0) == 0 and bucket_revision("c2", 0) == 0
    assert len({revision_token(f"c{i}", 42) for i in range(40)}) > 1
