"""Limits, enforced by the broker where it can: an agent's message size, what it can make the platform store,
and what one bad message can do to the service that reads it."""

from __future__ import annotations

import asyncio
import json

from nats.js.api import StreamConfig

from schemas import subjects
from services.bus import limits
from services.bus.endpoints import ERROR_CODE
from tests.harness import wait_for
from tests.hostile.conftest import BUCKETS, Hostile


async def test_an_oversized_message_is_refused_by_the_broker(hostile: Hostile) -> None:
    h = hostile
    closed = []

    async def on_closed() -> None:
        closed.append(True)

    nc = await h.attacker_nc(closed_cb=on_closed, allow_reconnect=False)
    # Under the server's 8 MB (the client lets it go), over the agent's 1 MiB in its JWT.
    await nc.publish(subjects.evt(h.attacker, subjects.EVT_INVENTORY), b"{" + b" " * (2 * limits.AGENT_MAX_PAYLOAD))
    await wait_for(lambda: closed, timeout=5, what="the broker to close the attacker's connection")
    # The server says why in its log (the client may see only the reset).
    assert h.stack.nats is not None and h.stack.nats.log_path is not None
    assert f"maximum payload exceeded: {2 * limits.AGENT_MAX_PAYLOAD + 1} vs {limits.AGENT_MAX_PAYLOAD}" in (
        h.stack.nats.log_path.read_text()
    )
    # Just under the limit, on each subject it may use: stored or dropped, never a crash.
    nc = await h.attacker_nc()
    near = b'{"type":"heartbeat.v1","pad":"' + b"x" * (limits.AGENT_MAX_PAYLOAD - 1024) + b'"}'
    for subject in (subjects.heartbeat(h.attacker), subjects.evt(h.attacker, subjects.EVT_INVENTORY)):
        await nc.publish(subject, near)
    # A result that big is a request lifecycle answers with a clear error (no write).
    reply = await nc.request(subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, h.attacker), near, timeout=10)
    assert (reply.headers or {}).get(ERROR_CODE) == "400", reply.headers
    await nc.flush()
    await h.intact()
    await h.legit_command_applies()


async def test_an_agent_can_fill_only_its_own_bounded_share_of_the_store(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    subject = subjects.evt(h.attacker, subjects.EVT_INVENTORY)
    for i in range(limits.EVT_MAX_PER_SUBJECT + 44):
        await nc.publish(subject, json.dumps({"type": "junk", "i": i}).encode())
    await nc.flush()
    # A subject of its own choosing would be a fresh per-subject allowance: refused.
    before = len(h.errors)
    await nc.publish(f"tether.evt.{h.attacker}.junk", b"{}")
    await nc.flush()
    await h.refused("a made-up event kind", before)
    platform = await h.stack.nc()
    try:
        js = platform.jetstream()

        async def capped() -> bool:
            info = await js.stream_info(subjects.EVT_STREAM, subjects_filter=subject)
            return (info.state.subjects or {}).get(subject, 0) == limits.EVT_MAX_PER_SUBJECT

        await wait_for(capped, timeout=10, what=f"{subject} capped at {limits.EVT_MAX_PER_SUBJECT}")
        # Every stream and bucket has its limits.
        configs: list[StreamConfig] = []
        for stream in (subjects.EVT_STREAM, subjects.EVENTS_STREAM, subjects.AUDIT_STREAM):
            configs.append((await js.stream_info(stream)).config)
        for bucket in BUCKETS:
            configs.append((await js.stream_info(f"KV_{bucket}")).config)
        for config in configs:
            assert config.max_msg_size == limits.STREAM_MAX_MSG, config.name
            assert config.max_bytes and config.max_bytes > 0, config.name
        evt = configs[0]
        assert evt.max_msgs_per_subject == limits.EVT_MAX_PER_SUBJECT
    finally:
        await platform.close()
    await h.intact()
    await h.legit_command_applies()


async def test_garbage_results_are_answered_with_an_error_and_later_commands_apply(hostile: Hostile) -> None:
    """Results are requests to lifecycle: garbage gets a clear error answer, not a crash, not a write, and a
    burst of them is bounded (queued, or told when to come back), never a backlog that starves honest agents."""
    h = hostile
    nc = await h.attacker_nc()
    subject = subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, h.attacker)
    for body in (b"{not json", b'{"type":"command-result.v1"}', b"\xff" * 1000, b""):
        reply = await nc.request(subject, body, timeout=10)
        assert (reply.headers or {}).get(ERROR_CODE) == "400", reply.headers
        assert json.loads(reply.data)["error"]["description"]
    replies = await asyncio.gather(*(nc.request(subject, b"{not json", timeout=15) for _ in range(300)))
    assert {(r.headers or {}).get(ERROR_CODE) for r in replies} <= {"400", "429"}
    await h.intact()
    await h.legit_command_applies()
