"""The benchmark's look at a reconnect storm: the accept queue of nats-server's client port read from the
kernel's socket tables, and the samples turned into lines with what the storm cost in handshakes."""

from __future__ import annotations

from pathlib import Path

from tests.bench.accepting import Sample, accept_queue, from_varz, lines

HEAD = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"


def row(local: str, state: str, queues: str) -> str:
    return f"   0: {local} 00000000:0000 {state} {queues} 00:00000000 00000000     0        0 1 2 0 100 0 0 10 0\n"


def test_the_accept_queue_of_the_listening_socket_is_read(tmp_path: Path) -> None:
    v4, v6 = tmp_path / "tcp", tmp_path / "tcp6"
    v4.write_text(
        HEAD
        + row("0100007F:1126", "0A", "00000000:000001F4")  # 127.0.0.1:4390 listening, 500 waiting
        + row("0100007F:1126", "01", "00000000:00000009")  # a connection of that port: not the queue
        + row("0100007F:1127", "0A", "00000000:00000007")  # another port
    )
    v6.write_text(HEAD + row("00000000000000000000000000000000:1126", "0A", "00000000:00000002"))
    assert accept_queue(4390, (str(v4), str(v6))) == 502
    assert accept_queue(4391, (str(v4),)) == 7
    assert accept_queue(4392, (str(v4), str(tmp_path / "missing"))) == -1


def test_the_lines_say_how_many_handshakes_were_given_up_on() -> None:
    samples = [Sample(0.5, 0, 0, -1), Sample(1.0, 3, 5, 40), Sample(2.6, 10, 14, 2)]
    out = lines(samples, expected=10)
    assert out[0].startswith("  at   0.5s: 0 open")
    assert "at   2.6s: 10 open, 14 accepted, 2 in the accept queue; JetStream API requests 0 taken" in out[1]
    assert len(out) == 3
    assert out[-1] == (
        "connections accepted since NATS started: 14 for 10 open (4 given up on, 0.40 per agent); "
        "accept queue at most 40"
    )


def test_a_sample_carries_what_the_jetstream_api_took_and_has_in_flight() -> None:
    varz = {
        "connections": 9,
        "total_connections": 12,
        "jetstream": {"stats": {"api": {"total": 4103, "errors": 2, "inflight": 17}}},
    }
    taken = from_varz(3.5, varz, 40)
    assert taken == Sample(3.5, 9, 12, 40, 4103, 17)
    assert lines([taken], expected=9)[0] == (
        "  at   3.5s: 9 open, 12 accepted, 40 in the accept queue; JetStream API requests 4103 taken, 17 in flight"
    )
    # A server without JetStream (or before it is ready) says nothing of its API.
    assert from_varz(1.0, {"connections": 3, "total_connections": 3, "jetstream": None}, 0) == Sample(1.0, 3, 3, 0)
    # JetStream still starting: its section there, its figures not yet (a crash here would end the sampling).
    assert from_varz(1.5, {"connections": 3, "jetstream": {"stats": None}}, 0) == Sample(1.5, 3, 0, 0)
