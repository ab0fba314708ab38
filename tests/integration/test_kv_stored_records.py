"""A stored record that fails this version's bounds (written by an older version, or by hand) is skipped with a
log line and counted when a bucket is loaded: it never stops a service loading the others (real nats-server)."""

from __future__ import annotations

import json
import logging

import pytest
from nats.aio.client import Client

from schemas.messages import ClusterHealth, Presence, encode, to_builtins
from services.bus.streams import ensure_bucket


async def test_a_record_over_newer_bounds_is_skipped_with_a_log_line_and_a_count(
    nc: Client, caplog: pytest.LogCaptureFixture
) -> None:
    presence = await ensure_bucket(nc.jetstream(), "t-presence", Presence, replicas=1)
    await presence.put("good-1", Presence(cluster="good-1", online=True, last_seen=1.0))
    await presence.put("good-2", Presence(cluster="good-2", health=ClusterHealth(kubernetes_version="v1.35")))
    # As an older version would have stored them: over today's bounds (a count and a version string),
    # then plain garbage.
    old = to_builtins(Presence(cluster="old"))
    old["health"]["nodes_ready"] = -5
    await presence.kv.put("old", json.dumps(old).encode())
    long_version = encode(Presence(cluster="long", health=ClusterHealth(kubernetes_version="v" * 5000)))
    await presence.kv.put("long", long_version)
    await presence.kv.put("garbage", b"\x00not json")

    with caplog.at_level(logging.WARNING, logger="services.bus.kv"):
        loaded = await presence.items()

    assert sorted(loaded) == ["good-1", "good-2"]
    assert loaded["good-2"].health.kubernetes_version == "v1.35"
    assert presence.skipped == 3
    skipped = sorted(r.getMessage().split("record ")[1].split(":")[0] for r in caplog.records)
    assert skipped == ["'garbage'", "'long'", "'old'"], caplog.text
    assert all("t-presence" in r.getMessage() for r in caplog.records)

    # Once a bad record is rewritten within bounds, it loads again.
    await presence.put("old", Presence(cluster="old"))
    assert sorted(await presence.items()) == ["good-1", "good-2", "old"]
