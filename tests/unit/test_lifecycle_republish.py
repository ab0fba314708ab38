"""At a start lifecycle publishes again the audit records of commands still pending (a crash may have come
between a desired-state write and its audit record). One at a time that took ~16 s for the 1,000 pending
commands of a platform restart at 10,000 agents, before lifecycle served a result; now a bounded number at once.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from schemas.messages import WorkloadRecord
from services.lifecycle import logic, recording
from services.lifecycle.workloads import REPUBLISH_CONCURRENCY, Workloads
from tests.unit.test_lifecycle_logic import NOW, result, tenant


class SlowSender:
    """A stream that takes a while per write, counting how many are in flight at once."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.in_flight = 0
        self.most = 0

    async def send(self, record: WorkloadRecord) -> None:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            self.sent.append(record.op_id)
        finally:
            self.in_flight -= 1


async def test_every_pending_command_is_published_again_a_bounded_number_at_once() -> None:
    pending = [tenant(f"t{i}") for i in range(3 * REPUBLISH_CONCURRENCY)]
    applied = recording.decide(tenant("applied"), result(tenant("applied")), "c1", NOW).new
    assert applied is not None and logic.in_sync(applied)
    records = [*pending, applied]

    async def all_records() -> list[WorkloadRecord]:
        return records

    sender = SlowSender()
    workloads = SimpleNamespace(desired=SimpleNamespace(all_records=all_records), sender=sender)
    async with asyncio.timeout(30):
        await Workloads.republish_pending(workloads)  # type: ignore[arg-type]
    assert sorted(sender.sent) == sorted(r.op_id for r in pending), "each pending one, and not the applied one"
    assert 1 < sender.most <= REPUBLISH_CONCURRENCY
