"""The history checker of the fault suite.

It records every command the platform acknowledged (the API's answers: object, generation, operation id,
when it was sent and answered) and reads every apply the ``sim`` driver performed (each agent's ledger,
``read_state(state_dir)["log"]``), then fails on:

- a command lost: an acknowledged generation of an object that its cluster neither applied nor superseded
  by applying a newer generation of the same object. The desired state is level-triggered: a cluster away
  while an object got several operations converges on the newest (its agent follows the desired state,
  which keeps the last few records per object), so the generations skipped meanwhile are *coalesced*
  (counted in ``coalesced``), not lost;
- a command applied twice: one generation of one object in a ledger more than once;
- out of order: per object, an applied generation not above the one applied before it (a decrease or a
  repeat); per cluster, a command applied before another one that was acknowledged before it was even sent;
- a final state differing from the desired one: every object as the platform wants it (generation,
  state, version) on its cluster, deleted ones gone.

Generations are what identify a command's effect: a resync re-sends a generation under a new operation id,
and that counts as the same command (applied once, in its place).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.drivers.sim import object_key, read_state
from tests.harness import Stack, wait_for

Where = tuple[str, int]
"""Where a generation was applied: (cluster, index in its ledger)."""


@dataclass(frozen=True)
class Acked:
    """One command the platform acknowledged (2xx from the API with a new generation)."""

    key: str
    """``tenant/<project>/<name>``, as in the sim driver."""
    cluster: str
    generation: int
    op_id: str
    operation: str
    sent: float
    acked: float


@dataclass
class History:
    acked: list[Acked] = field(default_factory=list)
    failures: int = 0
    """API calls that failed (no answer, 5xx): their effect is unknown, so they are not in ``acked``."""
    highest: dict[str, int] = field(default_factory=dict)

    def record(self, out: dict[str, Any], sent: float, acked: float) -> None:
        key = object_key(out["kind"], out["project"], out["name"])
        generation = int(out["desired"]["generation"])
        if generation <= self.highest.get(key, 0):
            return  # nothing new (already in that state, or a retry of the pending one)
        self.highest[key] = generation
        self.acked.append(
            Acked(
                key=key,
                cluster=out["cluster"],
                generation=generation,
                op_id=out["desired"]["op_id"],
                operation=out["desired"]["operation"],
                sent=sent,
                acked=acked,
            )
        )

    def check(self, ledgers: dict[str, list[dict[str, Any]]], desired: dict[str, dict[str, Any] | None]) -> list[str]:
        """Every problem found (empty: the history is sound). ``desired``: the API's view of every object
        by sim key (None: deleted), read once everything settled."""
        problems: list[str] = []
        where = self._applies(ledgers, problems)
        newest: dict[tuple[str, str], int] = {}  # (cluster, key) -> highest generation applied there
        for (key, gen), (cluster, _) in where.items():
            newest[(cluster, key)] = max(gen, newest.get((cluster, key), 0))
        self.coalesced = []
        for a in self.acked:
            if (a.key, a.generation) in where:
                continue
            if newest.get((a.cluster, a.key), 0) > a.generation:
                self.coalesced.append(a)  # superseded before its cluster saw it: the newer one was applied
                continue
            problems.append(f"lost: {a.key} generation {a.generation} ({a.operation}, op {a.op_id}) on {a.cluster}")
        problems += self._cluster_order(where)
        problems += self._final_state(desired)
        return problems

    @staticmethod
    def _applies(ledgers: dict[str, list[dict[str, Any]]], problems: list[str]) -> dict[tuple[str, int], Where]:
        """(key, generation) -> (cluster, ledger index) of every apply; a repeat or a decrease is a problem."""
        where: dict[tuple[str, int], Where] = {}
        for cluster, ledger in ledgers.items():
            last: dict[str, int] = {}
            for i, e in enumerate(ledger):
                key = object_key(e["kind"], e["project"], e["name"])
                gen = int(e["generation"])
                if (key, gen) in where:
                    problems.append(f"applied twice: {key} generation {gen} (op {e['op_id']}) on {cluster}")
                where[(key, gen)] = (cluster, i)
                if gen <= last.get(key, 0):
                    problems.append(f"out of order on {cluster}: {key} generation {gen} after {last[key]}")
                last[key] = max(gen, last.get(key, 0))
        return where

    def _cluster_order(self, where: dict[tuple[str, int], Where]) -> list[str]:
        problems: list[str] = []
        # Per cluster: a command acknowledged before another was sent is applied before it.
        by_cluster: dict[str, list[Acked]] = {}
        for a in self.acked:
            by_cluster.setdefault(a.cluster, []).append(a)
        for cluster, items in by_cluster.items():
            done_before = sorted(items, key=lambda a: a.acked)
            sends = sorted(items, key=lambda a: a.sent)
            j, latest, latest_of = 0, -1, None
            for b in sends:
                while j < len(done_before) and done_before[j].acked < b.sent:
                    a = done_before[j]
                    pos = where.get((a.key, a.generation))
                    if pos is not None and pos[1] > latest:
                        latest, latest_of = pos[1], a
                    j += 1
                pos_b = where.get((b.key, b.generation))
                if pos_b is not None and latest_of is not None and pos_b[1] < latest:
                    problems.append(
                        f"out of order on {cluster}: {b.key} generation {b.generation} applied before "
                        f"{latest_of.key} generation {latest_of.generation}, acknowledged before it was sent"
                    )
        return problems

    def _final_state(self, desired: dict[str, dict[str, Any] | None]) -> list[str]:
        """What the platform wants is what the clusters have."""
        problems: list[str] = []
        objects: dict[str, dict[str, Any]] = {}
        for cluster, state in self._states.items():
            for key, obj in state["objects"].items():
                objects[key] = {**obj, "cluster": cluster}
        for key, want in desired.items():
            have = objects.get(key)
            if want is None:
                if have is not None:
                    problems.append(f"final state: {key} was deleted but is on {have['cluster']}")
                continue
            d = want["desired"]
            if have is None:
                problems.append(f"final state: {key} (generation {d['generation']}) missing on {want['cluster']}")
                continue
            got = (have["generation"], have["state"], have["version"], have["cluster"])
            exp = (d["generation"], d["state"], d["version"], want["cluster"])
            if got != exp:
                problems.append(f"final state: {key} is {got}, desired {exp}")
        return problems

    _states: dict[str, dict[str, Any]] = field(default_factory=dict)
    coalesced: list[Acked] = field(default_factory=list)
    """After ``check``: the acknowledged generations superseded before their cluster applied them."""

    def read_clusters(self, state_dirs: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
        self._states = {cluster: read_state(d) for cluster, d in state_dirs.items()}
        for cluster, state in self._states.items():
            assert state["log_dropped"] == 0, f"{cluster}: the apply ledger overflowed"
        return {cluster: state["log"] for cluster, state in self._states.items()}


VERSIONS = ["v1.31", "v1.32", "v1.33", "v1.34", "v1.35", "v1.36"]


@dataclass
class Operator:
    """Issues a stream of operations on tenants through the API, surviving any failure, recording each
    acknowledged one. One operation at a time per tenant (what a person or a CI job does)."""

    stack: Stack
    history: History
    project: str
    tenants: dict[str, str]
    """tenant name -> cluster."""
    seed: int = 1
    known: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """Last known view of each tenant (None: deleted or not created)."""
    deletes: bool = True

    async def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any] | None:
        """One API call; the answer, or None when it failed (unknown effect)."""
        sent = time.time()
        try:
            async with httpx.AsyncClient(
                base_url=self.stack.api,
                timeout=10,
                headers={"Authorization": f"Bearer {self.stack.admin_token}"},
            ) as http:
                resp = await http.request(method, path, **kwargs)
        except httpx.HTTPError:
            self.history.failures += 1
            return None
        if resp.status_code >= 500:
            self.history.failures += 1
            return None
        if resp.status_code >= 300:
            return {"_status": resp.status_code, "_text": resp.text}
        out = dict(resp.json())
        if "desired" in out:
            self.history.record(out, sent, time.time())
        return out

    async def refresh(self, name: str) -> None:
        """After a failed call: learn what the platform now wants (the API may be down for a while)."""
        path = f"/api/v1/projects/{self.project}/tenants/{name}"
        for _ in range(200):
            try:
                async with httpx.AsyncClient(
                    base_url=self.stack.api,
                    timeout=10,
                    headers={"Authorization": f"Bearer {self.stack.admin_token}"},
                ) as http:
                    resp = await http.get(path)
            except httpx.HTTPError:
                await asyncio.sleep(0.2)
                continue
            if resp.status_code == 404:
                self.known[name] = None
                return
            if resp.status_code == 200:
                self.known[name] = resp.json()
                return
            await asyncio.sleep(0.2)
        raise AssertionError(f"the API did not answer for tenant {name} for a long time")

    async def step(self, name: str, rng: random.Random) -> None:
        view = self.known.get(name)
        base = f"/api/v1/projects/{self.project}/tenants"
        if view is None:
            out = await self.call("POST", base, json={"name": name, "cluster": self.tenants[name], "version": "v1.31"})
        else:
            d = view["desired"]
            choices = ["sleep" if d["state"] == "running" else "wake"] * 3
            if d["version"] != VERSIONS[-1]:
                choices.append("upgrade")
            if self.deletes:
                choices.append("delete")
            action = rng.choice(choices)
            if action == "delete":
                out = await self.call("DELETE", f"{base}/{name}")
            elif action == "upgrade":
                nxt = VERSIONS[VERSIONS.index(d["version"]) + 1]
                out = await self.call("POST", f"{base}/{name}/upgrade", json={"version": nxt})
            else:
                out = await self.call("POST", f"{base}/{name}/{action}")
        if out is None or "_status" in out:
            await self.refresh(name)
            return
        if out.get("desired", {}).get("state") == "deleted":
            # Deleting: the name can be created again once the cluster confirmed it gone.
            await self.wait_deleted(name)
            return
        self.known[name] = out

    async def wait_deleted(self, name: str) -> None:
        path = f"/api/v1/projects/{self.project}/tenants/{name}"

        async def gone() -> bool:
            try:
                resp = await self.stack.req("GET", path)
            except httpx.HTTPError:
                return False
            return resp.status_code == 404

        # Not forever: a link cut may hold the deletion back; the next step then works on what is there.
        try:
            await wait_for(gone, timeout=5, interval=0.1)
            self.known[name] = None
        except AssertionError:
            await self.refresh(name)

    async def run(self, until: asyncio.Event, pause: float = 0.05) -> None:
        """Operate on every tenant concurrently until ``until`` is set."""

        async def one(name: str, seed: int) -> None:
            rng = random.Random(seed)
            while not until.is_set():
                await self.step(name, rng)
                await asyncio.sleep(pause * rng.random())

        await asyncio.gather(*(one(n, self.seed * 1000 + i) for i, n in enumerate(self.tenants)))

    async def settle(self, timeout: float = 60.0) -> dict[str, dict[str, Any] | None]:
        """Wait until every tenant is in sync (or gone); the final desired view, by sim key."""
        final: dict[str, dict[str, Any] | None] = {}

        async def settled() -> bool:
            for name in self.tenants:
                resp = await self.stack.req("GET", f"/api/v1/projects/{self.project}/tenants/{name}")
                key = object_key("tenant", self.project, name)
                if resp.status_code == 404:
                    final[key] = None
                    continue
                if resp.status_code != 200:
                    return False
                view = resp.json()
                if not view["in_sync"] or view["desired"]["state"] == "deleted":
                    return False
                final[key] = view
            return True

        await wait_for(settled, timeout=timeout, interval=0.3, what="every tenant in sync")
        return final
