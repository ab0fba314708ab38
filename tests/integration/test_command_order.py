"""Per cluster, commands are applied in the order the platform accepted them: real NATS, every service and a sim
agent as processes.

The agent follows its cluster's desired-state records in stream order, one at a time. That order is the order of
acceptance only while a record that asks for a generation is written once, by the write that accepted it. The
fault suite once saw a tenant's generation applied after another tenant's four later ones: lifecycle had written
the waiting record again (an earlier generation's result folded in), the bucket's 5-record history per object
pushed the first write out while the agent was held up, and the agent met the command first at the copy.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from agent.drivers.sim import read_state
from schemas import subjects
from schemas.messages import CommandResult, ResultRecorded, WorkloadRecord, decode
from services.bus import call
from tests.harness import Stack, wait_for


def ledger(state_dir: Path) -> list[tuple[str, int]]:
    return [(entry["name"], int(entry["generation"])) for entry in read_state(state_dir)["log"]]


async def test_a_result_folded_in_never_moves_a_waiting_command(stack: Stack, tmp_path: Path) -> None:
    """t1's sleep is accepted before t2's, while the agent is in the middle of t1's create. The create's result
    comes in, then t1 gets four more operations while the agent is held (a cut link, an ack wait): t1's history
    (5 records) no longer holds the sleep's own record. The sleep is still applied before t2's sleep."""
    state = tmp_path / "c1"
    # Applies take 2 s: the agent can be caught in the middle of one.
    agent = await stack.connected("c1", state, TETHER_SIM_APPLY_DELAY="2")
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t2", "cluster": "c1"})
    await stack.wait_synced("tenant", "p1", "t2")
    nc = await stack.nc()
    js = nc.jetstream()
    kv = await js.key_value(subjects.desired_bucket("c1"))
    try:
        create = (await stack.ok("POST", "/api/v1/projects/p1/tenants", json={"name": "t1", "cluster": "c1"}))[
            "desired"
        ]

        written = (await kv.get("c1.tenant.p1.t1")).revision or 0

        async def holding() -> bool:
            info = await js.consumer_info(subjects.desired_stream("c1"), subjects.agent_consumer("c1"))
            delivered = info.delivered.stream_seq if info.delivered is not None else 0
            return info.num_ack_pending == 1 and delivered >= written

        await wait_for(holding, timeout=10, interval=0.05, what="the agent to take t1's create")
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGSTOP)
        try:
            t1 = decode((await kv.get("c1.tenant.p1.t1")).value or b"", WorkloadRecord)
            assert t1.observed is None, "the agent was not caught in the middle of t1's create"
            sleep_t1 = (await stack.ok("POST", "/api/v1/projects/p1/tenants/t1/sleep"))["desired"]
            sleep_t2 = (await stack.ok("POST", "/api/v1/projects/p1/tenants/t2/sleep"))["desired"]
            # The create's result, as the agent asks for it once applied.
            result = CommandResult(
                op_id=create["op_id"],
                cluster="c1",
                kind="tenant",
                project="p1",
                name="t1",
                generation=create["generation"],
                ok=True,
                state="running",
                version=create["version"],
                at=time.time(),
            )
            subject = subjects.agent_call(subjects.Lifecycle.AGENT_RESULT, "c1")
            # On the agent's own credentials: lifecycle answers only into its cluster's agent inbox.
            as_agent = await stack.nc_as_agent_of("c1", state)
            try:
                answer = await call(as_agent, subject, result, ResultRecorded)
            finally:
                await as_agent.close()
            assert answer.outcome == "superseded"
            for action in ("wake", "sleep", "wake", "sleep"):
                await stack.ok("POST", f"/api/v1/projects/p1/tenants/t1/{action}")
        finally:
            agent.proc.send_signal(signal.SIGCONT)
        final = await stack.wait_synced("tenant", "p1", "t1", timeout=60)
        await stack.wait_synced("tenant", "p1", "t2", timeout=60)
    finally:
        await nc.close()

    applied = ledger(state)
    t1_sleep, t2_sleep = ("t1", sleep_t1["generation"]), ("t2", sleep_t2["generation"])
    assert t1_sleep in applied, f"t1's sleep was not applied: {applied}"
    assert applied.index(t1_sleep) < applied.index(t2_sleep), f"applied out of the accepted order: {applied}"
    t1_gens = [g for name, g in applied if name == "t1"]
    assert t1_gens == sorted(set(t1_gens)) and t1_gens[-1] == final["desired"]["generation"]

    # The create's operation ends with its own result (the agent named it later), not as superseded.
    async def ends() -> dict[str, Any] | None:
        items = (await stack.ok("GET", "/api/v1/audit", params={"cluster": "c1"}))["items"]
        return {i["op_id"]: i["result"] for i in items if i["kind"] == "command" and i["result"] != "issued"}

    ended = await ends()
    assert ended is not None and create["op_id"] not in ended, f"the applied create was said {ended}"
