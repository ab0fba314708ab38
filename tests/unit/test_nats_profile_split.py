"""nats-server's CPU split by activity from ``go tool pprof -traces`` text (``tests/bench/natsprofile.py``):
each sample goes to the first marked frame from its leaf up."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.platform.natsd import NatsServerConfig
from tests.bench.natsprofile import OTHER, Split, activity_of, split_traces

SRV = "github.com/nats-io/nats-server/v2/server"
AUTH = "authentication (JWT and nonce checks)"
STORES = "JetStream stores (fsynced writes)"
GC = "garbage collection"

TRACES = f"""File: nats-server
Type: cpu
Duration: 5s, Total samples = 1.59s (31.80%)
-----------+-------------------------------------------------------
     1.20s   crypto/internal/fips140/edwards25519/field.feMul
             crypto/ed25519.Verify
             github.com/nats-io/jwt/v2.DecodeUserClaims
             {SRV}.(*Server).processClientOrLeafAuthentication
             {SRV}.(*client).processConnect
             {SRV}.(*client).parse
             {SRV}.(*client).readLoop
-----------+-------------------------------------------------------
     300ms   internal/runtime/syscall/linux.Syscall6
             syscall.Fsync
             {SRV}.(*msgBlock).flushPendingMsgsLocked
             {SRV}.(*fileStore).StoreMsg
             {SRV}.(*stream).internalLoop
-----------+-------------------------------------------------------
      80ms   runtime.scanObject
             runtime.gcAssistAlloc
             runtime.mallocgc
             {SRV}.(*client).processConnect
             {SRV}.(*client).readLoop
-----------+-------------------------------------------------------
     10ms   runtime.memmove
             somewhere.unknown
-----------+-------------------------------------------------------
    500us   runtime.futex
             runtime.findRunnable
             runtime.schedule
"""


def test_each_sample_goes_to_the_activity_nearest_its_leaf() -> None:
    split = split_traces(TRACES)
    assert split.seconds == pytest.approx(
        {AUTH: 1.2, STORES: 0.3, GC: 0.08, OTHER: 0.01, "Go scheduler (wake-ups, polling)": 0.0005}
    )
    assert split.total == pytest.approx(1.5905)


def test_a_collection_inside_a_connect_is_the_collections() -> None:
    assert activity_of(["runtime.gcAssistAlloc", f"{SRV}.(*client).processConnect"]) == GC
    assert activity_of([f"{SRV}.(*client).processConnect", f"{SRV}.(*client).readLoop"]) == AUTH
    assert activity_of(["main.main"]) == OTHER


def test_the_line_puts_the_largest_first() -> None:
    line = Split({STORES: 1.0, AUTH: 3.0}).line()
    assert line == f"4.0 s of CPU: {AUTH} 75%, {STORES} 25%"


def test_no_samples_no_activities() -> None:
    assert split_traces("File: nats-server\nType: cpu\n").seconds == {}


def test_the_profiler_is_configured_only_when_asked_for() -> None:
    off = NatsServerConfig(store_dir=Path("/nonexistent"), port=4222).render()
    on = NatsServerConfig(store_dir=Path("/nonexistent"), port=4222, profiling_port=6061).render()
    assert "prof_port" not in off
    assert "prof_port: 6061" in on.splitlines()


def test_a_closed_connections_jwt_redaction_is_the_closes_not_authentication() -> None:
    stack = [
        "github.com/nats-io/jwt/v2.DecodeUserClaims",
        f"{SRV}.redactBearerJWT",
        f"{SRV}.(*Server).saveClosedClient",
    ]
    assert activity_of(stack) == "connections accepted and closed (and their system events)"


async def test_a_profile_go_cannot_read_is_said_not_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.bench.natsprofile import Slices

    broken = tmp_path / "connect-00.pprof"
    broken.write_bytes(b"not a profile")
    monkeypatch.setenv("GO", "/bin/false")  # a toolchain that fails whatever it is asked
    slices = Slices(0, tmp_path, "connect", files=[broken])
    lines = await slices.report("to all bound")
    assert len(lines) == 1 and "go tool pprof failed" in lines[0]
    assert slices.split is None
