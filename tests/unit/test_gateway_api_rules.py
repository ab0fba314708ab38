"""The API side of the gateway, without I/O: the per-member rate limit and wake on use."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from schemas.messages import Condition, WorkloadAction, WorkloadRecord, WorkloadRef, WorkloadSpec
from services.api.gateway_limits import MemberLimiter
from services.api.gateway_wake import NotAwake, Waker


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_member_gets_a_burst_then_the_rate_and_is_told_when_to_come_back() -> None:
    clock = Clock()
    limits = MemberLimiter(rate=2, burst=5, clock=clock)
    assert [limits.take("bob") for _ in range(5)] == [0] * 5
    assert limits.take("bob") == 1, "out of tokens: one second until the next"
    assert limits.take("carol") == 0, "one member's bucket is not another's"
    clock.now += 0.5
    assert limits.take("bob") == 0
    assert limits.take("bob") >= 1
    clock.now += 60
    assert [limits.take("bob") for _ in range(5)] == [0] * 5, "refilled to the burst, never beyond"
    assert limits.take("bob") >= 1
    slow = MemberLimiter(rate=0.1, burst=1, clock=clock)
    assert slow.take("bob") == 0
    assert slow.take("bob") == 10


def test_memory_is_bounded_and_no_limit_means_no_state() -> None:
    limits = MemberLimiter(rate=1, burst=1, max_members=100)
    for i in range(10_000):
        limits.take(f"user{i}")
    assert len(limits) == 100
    off = MemberLimiter(rate=0, burst=1)
    assert all(off.take("bob") == 0 for _ in range(1000)) and len(off) == 0


def record(
    state: str = "sleeping", phase: str = "Sleeping", operation: str = "sleep", reason: str = ""
) -> WorkloadRecord:
    spec = WorkloadSpec(kind="tenant", project="eng", name="t1", cluster="c1", state=state)  # type: ignore[arg-type]
    conditions = (Condition(type="Ready", status="False", reason=reason, message="", last_transition_time=0.0),)
    return WorkloadRecord(
        spec=spec, generation=2, op_id="x", operation=operation, phase=phase, conditions=conditions if reason else ()
    )


class Lifecycle:
    """Lifecycle's wake and get, as the gateway sees them: the record turns Ready after ``reads`` reads."""

    def __init__(self, reads: int, last_phase: str = "Ready") -> None:
        self.reads = reads
        self.last_phase = last_phase
        self.wakes: list[WorkloadAction] = []
        self.read_count = 0

    async def wake(self, action: WorkloadAction) -> WorkloadRecord:
        self.wakes.append(action)
        return record("running", "Pending", "wake", "ControlPlanePending")

    async def read(self, ref: WorkloadRef) -> WorkloadRecord:
        self.read_count += 1
        if self.read_count >= self.reads:
            return msgspec.structs.replace(record("running", self.last_phase, "wake"), phase=self.last_phase)
        return record("running", "Pending", "wake", "KubeconfigMissing")


async def test_requests_to_a_sleeping_tenant_share_one_wake_and_are_served_when_ready() -> None:
    lc = Lifecycle(reads=3)
    waker = Waker(lc.wake, lc.read, wait=10)
    got = await asyncio.gather(*(waker.ready(record(), "bob") for _ in range(20)))
    assert all(r.phase == "Ready" for r in got)
    assert len(lc.wakes) == 1 and lc.wakes[0].by == "bob" and lc.wakes[0].action == "wake"
    assert lc.read_count == 3, "one poll loop for all twenty requests"


async def test_a_wake_that_takes_too_long_is_a_503_with_the_reason_and_when_to_retry() -> None:
    lc = Lifecycle(reads=10_000)
    waker = Waker(lc.wake, lc.read, wait=0.2)
    with pytest.raises(NotAwake) as late:
        await waker.ready(record(), "bob")
    assert late.value.retry_after and "ControlPlanePending" in late.value.message
    assert "waking up" in late.value.message


async def test_a_tenant_that_fails_or_is_put_back_to_sleep_is_not_waited_for() -> None:
    failing = Lifecycle(reads=1, last_phase="Failed")
    with pytest.raises(NotAwake, match="cannot be reached") as failed:
        await Waker(failing.wake, failing.read, wait=5).ready(record(), "bob")
    assert failed.value.retry_after is None
