"""The hostile-agent suite: a real platform, two connected agents, and the attacker's real credentials.

``hostile`` (the fixture) gives a test the platform (``Stack``: NATS in operator mode and every service as a
process), a victim cluster and an attacker cluster, each with its real agent running: the test acts as the
attacker's agent with its real ``nats.creds``, its credential and its spent connect token.
``hostile.intact()`` checks what every attack must leave
standing; ``hostile.legit_command_applies()`` proves the platform still does its job afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import nats.aio.client
import pytest
from nats.errors import Error as NatsError

from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from services.bus.endpoints import ping
from tests.harness import Proc, Stack, wait_for

pytestmark = pytest.mark.hostile


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # ``pytestmark`` here marks nothing outside this file: mark every test of this folder, so ``-m hostile``
    # selects the whole suite.
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.hostile)


SERVICES = ("registry", "access", "lifecycle", "health", "api")
MICRO = ("registry", "access", "lifecycle", "health")
"""The services with NATS micro endpoints (the API answers HTTP)."""
STREAMS = (subjects.AUDIT_STREAM, subjects.EVENTS_STREAM, subjects.EVT_STREAM)
BUCKETS = (
    subjects.BUCKET_TOKENS,
    subjects.BUCKET_USERS,
    subjects.BUCKET_CLUSTERS,
    subjects.BUCKET_WORKLOAD_NAMES,
    *subjects.DESIRED_BUCKETS,
)
"""Every desired-state bucket, not only the victim's: an attack on any of them (the attacker's own, another
shard's) must leave it standing too."""
OTHER_BUCKET, SAME_BUCKET = "evil", "neighbour"
"""Attacker clusters whose desired-state records are in another bucket than the victim's (the default), and in
the same one (``desired_bucket``): an attack on the desired state must be refused in both layouts."""
both_layouts = pytest.mark.parametrize(
    "hostile", [OTHER_BUCKET, SAME_BUCKET], indirect=True, ids=["attacker-in-another-bucket", "attacker-in-same-bucket"]
)
"""Run a test with the attacker's records in another desired-state bucket than the victim's, then in the same."""


@dataclass
class Snapshot:
    """Message counts of the streams and buckets that matter, and the victim's consumer."""

    messages: dict[str, int]
    victim_filter: str
    strays: list[str]
    """Keys of the victim's records found in a desired-state bucket other than its own."""


@dataclass
class Hostile:
    stack: Stack
    tmp: Path
    attacker: str = OTHER_BUCKET
    victim: str = "victim"
    victim_agent: Proc | None = None
    attacker_agent: Proc | None = None
    """The attacker cluster's real agent, still running (stop it when the test needs to be the only one)."""
    spent_token: str = ""
    errors: list[str] = field(default_factory=list)
    before: Snapshot | None = None
    _conns: list[nats.aio.client.Client] = field(default_factory=list)
    _spaces: int = 0

    # --- the attacker's material ----------------------------------------------------------------------
    @property
    def attacker_state(self) -> Path:
        return self.tmp / self.attacker

    @property
    def attacker_creds(self) -> Path:
        """The attacker agent's own ``nats.creds`` (a real agent identity, as issued by the registry)."""
        return self.attacker_state / "nats.creds"

    @property
    def attacker_credential(self) -> str:
        """The attacker agent's platform credential (``tac....``), as its agent stored it."""
        return str(json.loads((self.attacker_state / "credentials.json").read_text())["credential"])

    @property
    def attacker_inbox(self) -> str:
        return agent_inbox_prefix(self.attacker)

    async def attacker_nc(self, **kwargs: Any) -> nats.aio.client.Client:
        """A connection as the attacker agent; permission errors are collected in ``errors``."""

        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        kwargs.setdefault("error_cb", on_error)
        kwargs.setdefault("max_reconnect_attempts", 0)
        nc = await self.stack.nc_as_agent_of(self.attacker, self.attacker_state, **kwargs)
        self._conns.append(nc)
        return nc

    async def bootstrap_nc(self, token: str = "", **kwargs: Any) -> nats.aio.client.Client:
        """A connection as the bootstrap user baked into a connect token (default: the attacker's spent one)."""
        from schemas.credentials import bootstrap_seed, creds, parse_connect_token

        cluster, secret, jwt = parse_connect_token(token or self.spent_token)
        path = self.tmp / f"bootstrap-{cluster}.creds"
        path.write_text(creds(jwt, bootstrap_seed(secret)))

        async def on_error(exc: Exception) -> None:
            self.errors.append(str(exc))

        kwargs.setdefault("error_cb", on_error)
        kwargs.setdefault("max_reconnect_attempts", 0)
        nc = await nats.connect(
            self.stack.nats_url,
            user_credentials=str(path),
            inbox_prefix=agent_inbox_prefix(cluster).encode(),
            **kwargs,
        )
        self._conns.append(nc)
        return nc

    # --- what must hold after every attack ----------------------------------------------------------------
    async def snapshot(self) -> Snapshot:
        nc = await self.stack.nc()
        try:
            js = nc.jetstream()
            counts: dict[str, int] = {}
            for stream in STREAMS:
                counts[stream] = (await js.stream_info(stream)).state.messages
            for bucket in BUCKETS:
                counts[f"KV_{bucket}"] = (await js.stream_info(f"KV_{bucket}")).state.messages
            victim = subjects.desired_stream(self.victim)
            consumer = await js.consumer_info(victim, subjects.agent_consumer(self.victim))
            strays: list[str] = []
            for bucket in subjects.DESIRED_BUCKETS:
                if bucket != subjects.desired_bucket(self.victim):
                    info = await js.stream_info(f"KV_{bucket}", subjects_filter=f"$KV.{bucket}.{self.victim}.>")
                    strays.extend(info.state.subjects or {})
            return Snapshot(messages=counts, victim_filter=str(consumer.config.filter_subject), strays=strays)
        finally:
            await nc.close()

    async def services_answer(self) -> None:
        nc = await self.stack.nc()
        try:
            for name in SERVICES:
                proc = self.stack.services[name]
                assert proc.running, f"{name} died:\n{proc.output()[-3000:]}"
            for name in MICRO:
                assert await ping(nc, name, timeout=2), f"{name} does not answer its micro PING"
        finally:
            await nc.close()
        await self.stack.wait_healthy(timeout=10)

    async def intact(self) -> None:
        """Every service alive and answering; streams and buckets not shrunk (not deleted, not purged); the
        victim's consumer still there with its own filter, and no record of the victim in another cluster's
        desired-state bucket; the victim still online."""
        await self.services_answer()
        assert self.before is not None
        after = await self.snapshot()
        for name, count in self.before.messages.items():
            assert after.messages[name] >= count, f"{name} lost messages: {count} -> {after.messages[name]}"
        assert after.victim_filter == subjects.desired_records(self.victim), after.victim_filter
        assert after.strays == [], after.strays
        assert (await self.stack.cluster(self.victim))["online"]

    async def legit_command_applies(self) -> None:
        """A new space on the victim's cluster is applied by its agent."""
        self._spaces += 1
        name = f"after-{self._spaces}"
        await self.stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": name, "cluster": self.victim})
        await self.stack.wait_synced("space", "p1", name, timeout=30)

    async def refused(self, what: str, before: int) -> str:
        """Wait for the broker's error on the attacker's connection (after ``before`` errors)."""
        await wait_for(lambda: len(self.errors) > before, timeout=5, what=f"the broker to refuse {what}")
        text = self.errors[-1]
        assert "permissions violation" in text.lower(), text
        return text

    async def all_refused(self, nc: nats.aio.client.Client, attempts: dict[str, tuple[str, bytes]]) -> None:
        """Publish each attempt (what: (subject, body)) as the attacker, with a reply into its own inbox, and
        wait for the broker to refuse each."""
        for what, (subject, body) in attempts.items():
            before = len(self.errors)
            await nc.publish(subject, body, reply=f"{self.attacker_inbox}.x")
            await nc.flush()
            await self.refused(what, before)

    async def close(self) -> None:
        for nc in self._conns:
            try:
                await nc.close()
            except NatsError:
                pass


@pytest.fixture
async def hostile(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Hostile]:
    # The registry's sweep of the agents' consumers runs at once, under its own user's allow-list
    # (``test_the_services_own_traffic_stays_within_their_allow_lists``).
    stack = Stack(tmp=tmp_path, env_overrides={"TETHER_CONSUMER_SWEEP_DELAY": "0"})
    # ``both_layouts`` names the attacker cluster; every other test gets the default one.
    h = Hostile(stack=stack, tmp=tmp_path, attacker=getattr(request, "param", OTHER_BUCKET))
    try:
        await stack.start()
        h.victim_agent = await stack.connected(h.victim, tmp_path / h.victim)
        info = await stack.connect_cluster(h.attacker)
        h.spent_token = str(info["token"])
        h.attacker_agent = stack.agent(h.attacker_state, h.spent_token, name=f"agent-{h.attacker}")
        await stack.wait_online(h.attacker)
        # Something in every stream and bucket that must survive: a project, a space applied on the victim
        # (desired state, audit), the admin's token.
        await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
        await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "before", "cluster": h.victim})
        await stack.wait_synced("space", "p1", "before", timeout=30)
        h.before = await h.snapshot()
        yield h
    finally:
        await h.close()
        stack.stop()
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            print(stack.logs())
