from __future__ import annotations

import pytest

from schemas import subjects
from schemas.errors import InvalidInput
from schemas.messages import Heartbeat, decode, encode
from schemas.names import check_name, parse_label


def test_subject_builders_refuse_names_that_could_inject_wildcards() -> None:
    assert subjects.heartbeat("edge-1") == "tether.hb.edge-1"
    for bad in ("a.b", "*", ">", "a b", "A"):
        with pytest.raises(InvalidInput):
            subjects.desired_records(bad)


def test_parse_label() -> None:
    assert parse_label("env=prod") == ("env", "prod")
    assert parse_label("example.com/tier=") == ("example.com/tier", "")
    for bad in ("env", "=x", "env=has space"):
        with pytest.raises(InvalidInput):
            parse_label(bad)


def test_check_name_message_names_the_problem() -> None:
    with pytest.raises(InvalidInput, match=r"invalid cluster name 'Bad_Name': must consist"):
        check_name("Bad_Name", "cluster name")


def test_decode_errors_name_the_message_and_the_field() -> None:
    with pytest.raises(InvalidInput, match="malformed Heartbeat"):
        decode(b"{not json", Heartbeat)
    with pytest.raises(InvalidInput, match=r"invalid Heartbeat message: .*seq"):
        decode(
            b'{"type":"heartbeat.v1","cluster":"a","session":"s","seq":"x","sent_at":1,"health":{}}',
            Heartbeat,
        )


def test_messages_round_trip_and_ignore_unknown_fields() -> None:
    from schemas.messages import ClusterHealth

    msg = Heartbeat(cluster="a", session="s", seq=1, sent_at=1.0, health=ClusterHealth(nodes_total=2))
    assert decode(encode(msg), Heartbeat) == msg
    newer = encode(msg)[:-1] + b',"added_later":1}'
    assert decode(newer, Heartbeat) == msg


def test_a_clusters_desired_state_is_one_filter_that_matches_only_its_records() -> None:
    from schemas.messages import desired_key
    from services.bus.memory_parts import matches

    mine = subjects.desired_records("c1")
    assert mine == f"$KV.{subjects.desired_bucket('c1')}.c1.*.*.*"
    assert matches(mine, f"{subjects.desired_prefix('c1')}{desired_key('c1', 'tenant.p1.t1')}")
    for other in ("c2.tenant.p1.t1", "c10.tenant.p1.t1", "tenant.p1.t1", "c1.tenant.p1.t1.x"):
        assert not matches(mine, f"{subjects.desired_prefix('c1')}{other}"), other
    elsewhere = next(b for b in subjects.DESIRED_BUCKETS if b != subjects.desired_bucket("c1"))
    assert not matches(mine, f"$KV.{elsewhere}.c1.tenant.p1.t1"), "another bucket"


def test_clusters_are_spread_over_the_desired_state_buckets_the_same_way_everywhere() -> None:
    # A checksum, not Python's per-process hash: the registry, lifecycle and every agent agree.
    assert subjects.desired_shard("c1") == 1 and subjects.desired_bucket("c1") == "tether-desired-01"
    assert subjects.desired_stream("victim") == "KV_tether-desired-09"
    used = {subjects.desired_shard(f"cluster-{i}") for i in range(1000)}
    assert used == set(range(subjects.DESIRED_SHARDS))
    counts = [sum(1 for i in range(1000) if subjects.desired_shard(f"cluster-{i}") == s) for s in sorted(used)]
    assert max(counts) < 2 * min(counts), counts
