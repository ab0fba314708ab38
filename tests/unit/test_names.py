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
            subjects.cmd(bad, "apply")


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


def test_a_clusters_commands_stay_in_one_shard_whose_stream_holds_them() -> None:
    names = [f"edge-{i}" for i in range(2000)]
    for name in names[:50]:
        stream = subjects.cmd_stream(name)
        assert stream in subjects.CMD_STREAMS
        held = subjects.cmd_stream_subjects(stream).removesuffix(">")
        assert subjects.cmd(name, "apply").startswith(held)
        assert subjects.cmd_all(name).startswith(held)
        assert subjects.cmd(name, "apply").endswith(f".{name}.apply")
    # Stable across processes and versions (a shard that moved would strand pending commands).
    assert subjects.cmd_shard("edge-1") == "03"
    assert subjects.cmd("c1", "apply") == "tether.cmd.01.c1.apply"
    # Spread: no shard gets more than twice its share of 2,000 clusters.
    counts = {s: 0 for s in subjects.CMD_STREAMS}
    for name in names:
        counts[subjects.cmd_stream(name)] += 1
    assert max(counts.values()) < 2 * len(names) / subjects.CMD_SHARDS
    assert min(counts.values()) > 0
