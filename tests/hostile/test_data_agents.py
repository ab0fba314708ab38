"""What a hostile agent SAYS, with its own real credentials against a real platform (issue 12, data half).

Cluster ``c1`` is the attacker: its agent process is stopped and its credentials are used directly, as a
stolen ``nats.creds`` would be. Cluster ``c2`` is the victim, with a live agent and a tenant of its own.
Every test ends the same way: the services still answer, nothing of ``c2`` changed, and a legitimate
command on ``c1`` (its agent started again) still applies.

Every hostile message is followed by an honest one on the same subject from the same connection, whose
effect is waited for: the consumers handle one subject in order, so by then the hostile ones were handled
(and the honest one proves the broker let the connection publish there at all). Results are requests to
lifecycle: each hostile one is answered (a clear error, or "no such object"), and nothing is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client
from nats.errors import MaxPayloadError

from schemas import subjects
from schemas.messages import (
    MAX_KEPT_TEXT,
    MAX_OBJECTS,
    ClusterHealth,
    CommandResult,
    ControlPlaneHealth,
    Heartbeat,
    Inventory,
    InventoryItem,
    encode,
)
from services.bus.endpoints import ping
from services.lifecycle.logic import MAX_ORPHAN_DELETES
from tests.harness import Proc, Stack, wait_for
from tests.hostile.conftest import BUCKETS, MICRO, SERVICES, STREAMS

pytestmark = pytest.mark.hostile

P = "/api/v1/projects/p1/tenants"


@dataclass
class Fleet:
    stack: Stack
    attacker: Client
    """NATS connection with c1's agent's own credentials."""
    c1_state: Path
    victim_before: dict[str, Any]
    stored: dict[str, int]
    """Messages in the streams and buckets that matter, before the attack."""

    async def tenant(self, name: str) -> dict[str, Any]:
        return dict(await self.stack.ok("GET", f"{P}/{name}"))

    async def victim_unchanged(self) -> None:
        assert await self.tenant("victim") == self.victim_before
        c2 = await self.stack.cluster("c2")
        assert c2["online"] is True and c2["state"] == "connected"

    async def still_answering(self) -> None:
        """Every service alive and answering, and no stream or bucket shrunk (deleted, purged)."""
        for path in ("/api/v1/tenants", "/api/v1/clusters", "/api/v1/spaces", "/healthz"):
            resp = await self.stack.req("GET", path)
            assert resp.status_code == 200, (path, resp.text)
        for name in SERVICES:
            proc = self.stack.services[name]
            assert proc.running, f"{name} died:\n{proc.output()[-3000:]}"
        nc = await self.stack.nc()
        try:
            for name in MICRO:
                assert await ping(nc, name, timeout=2), f"{name} does not answer"
            after = await stored_counts(nc)
        finally:
            await nc.close()
        for name, count in self.stored.items():
            assert after[name] >= count, f"{name} lost messages: {count} -> {after[name]}"

    async def legit_command_applies(self) -> None:
        """c1's real agent back; an honest action on its tenant is applied."""
        agent = self.stack.agent(self.c1_state, name="agent-c1-again")
        try:
            await self.stack.wait_online("c1", timeout=20)
            await self.stack.ok("POST", f"{P}/mine/sleep")

            async def asleep() -> bool:
                return (await self.tenant("mine"))["phase"] == "Sleeping"

            await wait_for(asleep, timeout=30, what="c1's tenant asleep")
        finally:
            agent.stop()
        await self.victim_unchanged()

    def result(self, name: str, generation: int, **kw: Any) -> CommandResult:
        fields: dict[str, Any] = dict(
            op_id="forged", cluster="c1", kind="tenant", project="p1", name=name, generation=generation, ok=True
        )
        fields.update(kw)
        return CommandResult(**fields)

    async def ask(self, payload: bytes | msgspec.Struct) -> str:
        """Ask lifecycle to record a result as c1's agent: the outcome answered, or ``error <code>: <text>``."""
        data = payload if isinstance(payload, bytes) else encode(payload)  # type: ignore[arg-type]
        msg = await self.attacker.request(RESULT, data, timeout=10)
        headers = msg.headers or {}
        if "Nats-Service-Error-Code" in headers:
            return f"error {headers['Nats-Service-Error-Code']}: {headers.get('Nats-Service-Error', '')}"
        return str(msgspec.json.decode(msg.data)["outcome"])

    async def publish(self, subject: str, payload: bytes | msgspec.Struct) -> None:
        data = payload if isinstance(payload, bytes) else encode(payload)  # type: ignore[arg-type]
        # Over the broker's payload limit for this agent, the client refuses to send it: refused all the same.
        with contextlib.suppress(MaxPayloadError):
            await self.attacker.publish(subject, data)
        await self.attacker.flush()


@pytest.fixture
async def fleet(stack: Stack, tmp_path: Path) -> AsyncIterator[Fleet]:
    c1: Proc = await stack.connected("c1", tmp_path / "c1")
    await stack.connected("c2", tmp_path / "c2")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("POST", P, json={"name": "victim", "cluster": "c2"})
    await stack.ok("POST", P, json={"name": "mine", "cluster": "c1"})
    await stack.wait_synced("tenant", "p1", "victim")
    await stack.wait_synced("tenant", "p1", "mine")
    c1.stop()  # from here on, c1's credentials are the attacker's
    attacker = await stack.nc_as_agent_of("c1", tmp_path / "c1")
    victim = dict(await stack.ok("GET", f"{P}/victim"))
    nc = await stack.nc()
    try:
        stored = await stored_counts(nc)
    finally:
        await nc.close()
    try:
        yield Fleet(stack=stack, attacker=attacker, c1_state=tmp_path / "c1", victim_before=victim, stored=stored)
    finally:
        await attacker.close()


async def stored_counts(nc: Client) -> dict[str, int]:
    js = nc.jetstream()
    counts = {stream: (await js.stream_info(stream)).state.messages for stream in STREAMS}
    for bucket in BUCKETS:
        counts[bucket] = (await js.stream_info(f"KV_{bucket}")).state.messages
    return counts


RESULT = subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, "c1")
INVENTORY = subjects.evt("c1", subjects.EVT_INVENTORY)


async def test_results_touch_only_the_senders_records_at_generations_sent(fleet: Fleet) -> None:
    victim = await fleet.tenant("victim")
    mine = await fleet.tenant("mine")
    gen = mine["desired"]["generation"]
    # another cluster's tenant, named from c1's own subject: a "deleted" that would free it (answered as if
    # there were no such object: c1 learns nothing of c2's)
    for lie in (
        fleet.result("victim", victim["desired"]["generation"], state="deleted"),
        fleet.result("victim", victim["desired"]["generation"] + 5, ok=False, reason="Pwned", message="x"),
    ):
        assert await fleet.ask(lie) == "unknown"
    refused: list[tuple[bytes | msgspec.Struct, str]] = [
        # the payload claiming to be c2 (the subject says c1)
        (fleet.result("victim", victim["desired"]["generation"], cluster="c2", state="deleted"), "cannot come from"),
        # its own tenant at a generation never sent (would mark every later change applied)
        (fleet.result("mine", gen + 1, state="deleted"), "was never sent"),
        (fleet.result("mine", 2**53 - 1, state="sleeping"), "was never sent"),
        # its own tenant's current generation, under an operation the platform never sent
        (fleet.result("mine", gen, ok=False, reason="Forged", message="x"), "was never sent"),
    ]
    for absurd in ({"generation": 2**70}, {"generation": -1}, {"at": 1e18}, {"name": "*"}, {"name": "a.b.>"}):
        data = msgspec.to_builtins(fleet.result("mine", gen, state="deleted"))
        data.update(absurd)
        refused.append((msgspec.json.encode(data), "invalid CommandResult"))
    refused.append((b"\x00not json at all", "malformed CommandResult"))
    for message, why in refused:
        answer = await fleet.ask(message)
        assert answer.startswith("error 400: ") and why in answer, answer
    watcher = await fleet.stack.nc()
    announced: list[dict[str, Any]] = []

    async def on_failed(msg: Any) -> None:
        announced.append(msgspec.json.decode(msg.data))

    sub = await watcher.subscribe(subjects.public_event("command.failed"), cb=on_failed)
    # Its own tenant's failure, legitimately reported, with a clock from 2096 and a novel for a message.
    op = mine["desired"]["op_id"]
    honest = fleet.result("mine", gen, op_id=op, ok=False, reason="R" * 100, message="m" * 16_000, at=4.0e9)
    assert await fleet.ask(honest) == "recorded"
    assert await fleet.ask(honest) == "already", "asked again (a lost answer): not recorded twice"

    async def failed() -> dict[str, Any] | None:
        t = await fleet.tenant("mine")
        return t if t["phase"] == "Failed" else None

    now = time.time()
    mine_after = await wait_for(failed, timeout=20, what="c1's honest failure recorded")
    assert mine_after["desired"]["generation"] == gen  # no forged generation took
    assert len(mine_after["failure"]) <= MAX_KEPT_TEXT + 80
    ready = next(c for c in mine_after["conditions"] if c["type"] == "Ready")
    assert len(ready["message"]) <= MAX_KEPT_TEXT
    try:
        event = await wait_for(lambda: announced and announced[0], timeout=10, what="command.failed announced")
    finally:
        await sub.unsubscribe()
        await watcher.close()
    assert event["name"] == "mine" and len(event["message"]) <= MAX_KEPT_TEXT and len(event["reason"]) <= 64
    assert [e["reason"] for e in announced if e["reason"] == "Forged"] == [], "a forged operation was announced"
    await fleet.victim_unchanged()
    await fleet.still_answering()
    listed = await fleet.stack.ok("GET", "/api/v1/tenants")
    assert {t["name"] for t in listed["items"]} == {"victim", "mine"}
    assert all(t["last_activity"] is None or _t(t["last_activity"]) < now + 60 for t in listed["items"])
    await fleet.legit_command_applies()


async def test_inventories_touch_only_the_senders_records_and_clamp_time(fleet: Fleet) -> None:
    mine = await fleet.tenant("mine")
    victim = await fleet.tenant("victim")
    gen = mine["desired"]["generation"]

    def item(name: str, generation: int, last_activity: float) -> InventoryItem:
        return InventoryItem(
            kind="tenant", project="p1", name=name, generation=generation, state="running", last_activity=last_activity
        )

    # Out-of-bounds values: the whole inventory is refused.
    for absurd in ({"last_activity": 1e18}, {"generation": 2**70}, {"name": "victim.>"}):
        data = msgspec.to_builtins(Inventory(cluster="c1", items=(item("mine", gen, 0.0),), at=time.time()))
        data["items"][0].update(absurd)
        await fleet.publish(INVENTORY, msgspec.json.encode(data))
    # In bounds but lying: c2's tenant claimed busy (keeps it from sleeping) and at a future generation,
    # c1's own tenant active in 2096.
    forged = Inventory(
        cluster="c1",
        items=(item("victim", victim["desired"]["generation"] + 10, 4.0e9), item("mine", gen, 4.0e9)),
        at=time.time(),
    )
    before = mine["last_activity"]

    async def touched() -> dict[str, Any] | None:
        # Sent until seen: lifecycle reads the desired state for inventories at most once a second, so the
        # first one may meet a view from before c1's tenant existed (and rightly touch nothing).
        await fleet.publish(INVENTORY, msgspec.structs.replace(forged, at=time.time()))
        t = await fleet.tenant("mine")
        return t if t["last_activity"] != before else None

    after = await wait_for(touched, timeout=20, interval=0.5, what="c1's own activity recorded")
    assert _t(after["last_activity"]) <= time.time() + 1, "an agent's clock never puts activity in the future"
    await fleet.victim_unchanged()
    await fleet.still_answering()
    await fleet.legit_command_applies()


async def test_giant_and_unknown_inventories_are_bounded(fleet: Fleet) -> None:
    nc = await fleet.stack.nc()
    # An orphan's deletion is a deletion record under c1's key (the ghosts are all in project p9).
    stream, subject = subjects.desired_stream("c1"), f"{subjects.desired_prefix('c1')}c1.space.p9.*"

    async def queued() -> int:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subject)
        return len(info.state.subjects or {})

    async def honest_seen(after: str | None) -> str:
        """Re-sent until handled: c1's own tenant active now; its new last activity."""

        async def touched() -> str | None:
            now = time.time()
            item = InventoryItem(
                kind="tenant", project="p1", name="mine", generation=gen, state="running", last_activity=now
            )
            await fleet.publish(INVENTORY, Inventory(cluster="c1", items=(item,), at=now))
            seen = (await fleet.tenant("mine"))["last_activity"]
            return seen if seen != after else None

        return await wait_for(touched, timeout=60, interval=0.5, what="an honest inventory handled")

    try:
        start = await queued()
        mine = await fleet.tenant("mine")
        gen = mine["desired"]["generation"]
        # First lifecycle's view of the desired state must know c1's tenant (it is read at most once a second).
        first = await honest_seen(mine["last_activity"])
        unknown = tuple(
            InventoryItem(kind="space", project="p9", name=f"ghost-{i}", generation=7, state="running")
            for i in range(MAX_OBJECTS + 1)
        )
        t0 = time.monotonic()
        # One more than the bound: refused whole (decoding it is all it costs).
        await fleet.publish(INVENTORY, Inventory(cluster="c1", items=unknown, at=time.time()))
        # The bound: c1's own tenant (so nothing is re-sent) and 4,999 unknown objects.
        own = InventoryItem(kind="tenant", project="p1", name="mine", generation=gen, state="running")
        flood = Inventory(cluster="c1", items=(own, *unknown[: MAX_OBJECTS - 1]), at=time.time())
        await fleet.publish(INVENTORY, flood)
        await honest_seen(first)
        handled_in = time.monotonic() - t0
        commands = await queued() - start
        print(f"4,999 unknown objects -> {commands} deletion records, handled in {handled_in:.1f}s")
        assert 0 < commands <= MAX_ORPHAN_DELETES, commands
        assert handled_in < 30, "within one ack wait"
        await fleet.victim_unchanged()
        await fleet.still_answering()
    finally:
        await nc.close()
    await fleet.legit_command_applies()


async def flood_c1_heartbeats(fleet: Fleet, seconds: float) -> float:
    """Flood c1's heartbeat subject for ``seconds`` while checking that c2 stays online; returns the rate.

    No offline event of c2 may appear, during the flood or while health drains what it queued."""
    watcher = await fleet.stack.nc()
    offline: list[bytes] = []

    async def on_event(msg: Any) -> None:
        if b'"c2"' in msg.data:
            offline.append(msg.data)

    sub = await watcher.subscribe(subjects.public_event("cluster.offline"), cb=on_event)
    beat = encode(
        Heartbeat(cluster="c1", session="flood", seq=1, sent_at=time.time(), health=ClusterHealth(nodes_total=1))
    )
    hb = subjects.heartbeat("c1")
    sent = 0
    deadline = time.monotonic() + seconds
    t0 = time.monotonic()
    try:
        while time.monotonic() < deadline:
            for _ in range(1_000):
                await fleet.attacker.publish(hb, beat)
            sent += 1_000
            await asyncio.sleep(0)  # the client flushes in the background
            c2 = await fleet.stack.cluster("c2") if sent % 50_000 == 0 else None
            assert c2 is None or c2["online"] is True, "c2 went offline during the flood"
        await fleet.attacker.flush(timeout=30)
        rate = sent / (time.monotonic() - t0)
        print(f"flood: {sent} heartbeats at {rate:,.0f}/s")
        assert rate > 20_000, f"the flood was too slow to mean anything: {rate:.0f}/s"
        settle = time.monotonic() + 5.0
        while time.monotonic() < settle:
            assert (await fleet.stack.cluster("c2"))["online"] is True
            await asyncio.sleep(0.25)
        assert offline == [], offline
    finally:
        await sub.unsubscribe()
        await watcher.close()
    return rate


async def test_heartbeat_flood_does_not_take_another_cluster_offline(fleet: Fleet) -> None:
    # Longer than the offline budget (FAST_ENV: 3 s) three times over.
    await flood_c1_heartbeats(fleet, 10.0)
    assert (
        "dropped" in fleet.stack.services["health"].output() and "over 10/s" in fleet.stack.services["health"].output()
    ), "the rate limit did the work"
    await fleet.victim_unchanged()
    await fleet.still_answering()
    await fleet.legit_command_applies()


async def test_health_that_cannot_keep_up_holds_its_judgement(fleet: Fleet) -> None:
    """Without the rate limit and with a small inbox, health falls behind and the client drops heartbeats
    (a slow consumer): c2's among them. Silence health could not hear is not evidence: no one goes offline.
    The inbox holds 50: one read of the socket under the flood brings more than that, so heartbeats are
    dropped however quick health is (with 2,000 it once kept up with 74,000 a second, and the test proved
    nothing); the drops are counted, so health knows of them even once its inbox is empty again."""
    stack = fleet.stack
    stack.services["health"].stop()
    stack.env_overrides.update(TETHER_HEARTBEAT_RATE="100000000", TETHER_HEARTBEAT_PENDING_LIMIT="50")
    stack.restart_service("health")
    await stack.wait_healthy()
    await stack.wait_online("c2")
    await flood_c1_heartbeats(fleet, 10.0)
    out = stack.services["health"].output()
    assert "holding judgement of silent clusters" in out, "health never fell behind: the test proved nothing"
    await fleet.victim_unchanged()
    await fleet.still_answering()
    await fleet.legit_command_applies()


async def test_made_up_lateness_does_not_put_off_another_cluster_s_offline(fleet: Fleet) -> None:
    """Health allows a silence as much longer as the fleet's heartbeats reach it late (``services.health.hearing``):
    c1 claims every heartbeat is 25 s late (its ``sent_at``, after one on time for its baseline) while c2's
    agent stops. Of the two clusters only c1 is heard: counted alone, its claim would put off c2's offline by
    25 s; c2 is shown offline within the budget (3 s here) and its sweep instead."""
    stack = fleet.stack
    hb = subjects.heartbeat("c1")

    def beat(late: float) -> Heartbeat:
        return Heartbeat(cluster="c1", session="late", seq=1, sent_at=time.time() - late, health=ClusterHealth())

    await fleet.publish(hb, beat(0.0))
    victim = next(proc for proc in stack.agents if proc.name == "agent-c2")

    async def claim() -> None:
        while True:
            await fleet.attacker.publish(hb, encode(beat(25.0)))
            await asyncio.sleep(0.2)  # within the rate limit (10/s): every one of them is heard

    claiming = asyncio.create_task(claim())
    try:
        victim.kill9()
        killed = time.monotonic()
        await stack.wait_online("c2", online=False, timeout=20)
        took = time.monotonic() - killed
    finally:
        claiming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await claiming
    print(f"c2 shown offline {took:.1f} s after its agent was killed, c1 claiming 25 s of lateness")
    assert took < 10.0, f"c2's offline was put off by c1's claim: {took:.1f} s"
    stack.agent(fleet.c1_state.parent / "c2", name="agent-c2-again")
    await stack.wait_online("c2")
    await fleet.still_answering()
    await fleet.legit_command_applies()


async def test_oversized_and_malformed_heartbeats_are_dropped(fleet: Fleet) -> None:
    hb = subjects.heartbeat("c1")
    honest = Heartbeat(cluster="c1", session="s1", seq=1, sent_at=time.time(), health=ClusterHealth(nodes_total=1))
    planes = tuple(ControlPlaneHealth(project="p1", name=f"t{i}") for i in range(MAX_OBJECTS + 1))
    for bad in (
        msgspec.structs.replace(honest, health=ClusterHealth(kubernetes_version="v" * 100_000)),
        msgspec.structs.replace(honest, health=ClusterHealth(control_planes=planes)),
        msgspec.structs.replace(honest, session="s" * 10_000),
        msgspec.structs.replace(honest, cluster="c2"),  # someone else's name on c1's subject
    ):
        await fleet.publish(hb, bad)
    await fleet.publish(hb, b"{" * 100_000)
    # Honest, with a version string the barrier can see.
    await fleet.publish(hb, msgspec.structs.replace(honest, health=ClusterHealth(nodes_total=1, agent_version="9.9.9")))

    async def seen() -> bool:
        return (await fleet.stack.cluster("c1"))["agent_version"] == "9.9.9"

    await wait_for(seen, timeout=10, what="the honest heartbeat after the bad ones")
    c1 = await fleet.stack.cluster("c1")
    assert len(c1["kubernetes_version"]) < 100 and c1["control_planes"] == []
    await fleet.victim_unchanged()
    await fleet.still_answering()
    await fleet.legit_command_applies()


def _t(text: str) -> float:
    """An API time back in seconds since the epoch."""
    return datetime.fromisoformat(text).timestamp()
