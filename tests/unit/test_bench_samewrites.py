"""The same-writes baseline's layout: a second variant beside the first shares no stream, bucket or subject,
and a spread desired state puts each cluster's records and consumer filter in one bucket."""

from __future__ import annotations

from tests.bench.samewrites import Layout, agent_source


def _names(layout: Layout) -> set[str]:
    return {
        *layout.bucket_names(),
        *layout.plain(),
        *layout.plain().values(),
        layout.act,
        layout.result_call,
        layout.results_durable,
        layout.cmd_stream(0),
    }


def test_the_first_layout_keeps_the_names_it_always_had() -> None:
    layout = Layout(url="", creds="", clusters=3, writes=4)
    assert layout.bucket_names() == ["BENCHSW"]
    assert layout.plain() == {
        "BENCHSW_AUDIT": "benchsw.audit.>",
        "BENCHSW_EVENTS": "benchsw.events.>",
        "BENCHSW_EVT": "benchsw.evt.>",
    }
    assert (layout.act, layout.result_call, layout.results_durable) == (
        "benchsw.act",
        "benchsw.result",
        "benchsw-results",
    )
    assert agent_source(layout, 2) == ("KV_BENCHSW", "$KV.BENCHSW.c00002.>")


def test_a_spread_variant_shares_nothing_with_the_first_and_pins_each_cluster_to_one_bucket() -> None:
    first = Layout(url="", creds="", clusters=40, writes=4)
    spread = Layout(url="", creds="", clusters=40, writes=4, variant="b16", buckets=16)
    assert not _names(first) & _names(spread)
    assert len(spread.bucket_names()) == 16
    assert spread.bucket(17) == spread.bucket(1) == "BENCHSW_B16_01"
    assert spread.bucket_of_key(spread.key(17)) == "BENCHSW_B16_01"
    assert agent_source(spread, 17) == ("KV_BENCHSW_B16_01", "$KV.BENCHSW_B16_01.c00017.>")
    # Fewer clusters than buckets: only the buckets some cluster uses.
    assert Layout(url="", creds="", clusters=3, variant="b16", buckets=16).bucket_names() == [
        "BENCHSW_B16_00",
        "BENCHSW_B16_01",
        "BENCHSW_B16_02",
    ]
