"""Finding 2 of issue 15: failures are counted and announced, a failed delete too; and (finding 6) every
public event carries a message id of the shape the AsyncAPI document says.

Agents report every failure with ``applied=False`` (nothing was done), and lifecycle counted only
``applied`` results: ``tether_commands_failed_total`` never appeared. A failed delete keeps its phase
(Deleting), so no phase change announced it either.
"""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from nats.js.errors import NotFoundError

from schemas import subjects
from services.platform.natsd import free_port
from tests.harness import Stack, wait_for

pytestmark = pytest.mark.clients


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
        return str(resp.read().decode())


def failed_total(text: str, cluster: str) -> float:
    found = re.search(rf'^tether_commands_failed_total\{{cluster="{cluster}"[^}}]*\}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_failed_create_and_delete_are_counted_and_announced(stack: Stack, tmp_path: Path) -> None:
    port = free_port()
    stack.services["lifecycle"].stop()
    lifecycle = stack.service("lifecycle")
    lifecycle.env["TETHER_PROMETHEUS_PORT"] = str(port)
    stack.services["lifecycle"] = lifecycle.start()
    await stack.connected("c1", tmp_path / "c1", TETHER_SIM_FAIL="doomed")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1", "clusters": ["c1"]})

    nc = await stack.nc()
    failures: list[dict[str, object]] = []

    async def on_failure(msg: object) -> None:
        failures.append(json.loads(msg.data))  # type: ignore[attr-defined]

    await nc.subscribe(subjects.public_event("command.failed"), cb=on_failure)
    try:
        await stack.ok("POST", "/api/v1/projects/p1/spaces", json={"name": "doomed", "cluster": "c1"})
        await wait_for(lambda: len(failures) >= 1, timeout=20, what="command.failed for the create")
        assert failures[0]["name"] == "doomed" and failures[0]["phase"] == "Failed"
        assert failures[0]["reason"] == "SimulatedFailure"
        counted = await wait_for(
            lambda: asyncio.to_thread(lambda: failed_total(scrape(port), "c1") >= 1 or None),
            timeout=20,
            what="tether_commands_failed_total{cluster=c1} to count the failed create",
        )
        assert counted

        async with stack.http() as http:
            resp = await http.delete("/api/v1/projects/p1/spaces/doomed")
            assert resp.status_code < 300, resp.text
        await wait_for(lambda: len(failures) >= 2, timeout=20, what="command.failed for the delete")
        assert failures[1]["name"] == "doomed" and failures[1]["phase"] == "Deleting", failures
        assert await wait_for(
            lambda: asyncio.to_thread(lambda: failed_total(scrape(port), "c1") >= 2 or None),
            timeout=20,
            what="tether_commands_failed_total{cluster=c1} to count the failed delete",
        )
        # Every event EVENTS kept carries a message id of a shape the AsyncAPI document names.
        await check_message_ids(nc)
    finally:
        await nc.drain()


ID_SHAPES = {
    "cluster-event.v1": r"((registered|connected|disconnected)|cluster-(online|offline))-[a-z0-9-]+-[0-9.e+]+",
    "workload-event.v1": r"(space|tenant)-[a-z0-9-]+-[a-z0-9-]+-([a-z]+-r\d+|deleted-g\d+)|failed-.+",
    "membership-changed.v1": r"members-[a-z0-9-]+-(\d+|team-[a-z0-9-]+-\d+)",
}


async def check_message_ids(nc: Any) -> None:
    js, seq, seen = nc.jsm(), 1, set()
    while True:
        try:
            msg = await js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject="tether.events.>", next=True)
        except NotFoundError:
            break
        kind = json.loads(msg.data)["type"]
        msg_id = (msg.headers or {}).get("Nats-Msg-Id", "")
        assert re.fullmatch(ID_SHAPES[kind], msg_id), f"{msg.subject}: {kind} with id {msg_id!r}"
        seen.add(kind)
        seq = msg.seq + 1
    assert {"cluster-event.v1", "workload-event.v1"} <= seen, seen
