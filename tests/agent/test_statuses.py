"""The agent reports workloads that settle after their command: each change once, a deletion when the
namespace is gone, and again whatever got no answer."""

from __future__ import annotations

from dataclasses import replace

from agent.drivers import WorkloadStatus
from agent.statuses import StatusReporter
from schemas.errors import InvalidInput, Unavailable
from schemas.messages import CommandResult, ResultRecorded


class FakeDriver:
    def __init__(self) -> None:
        self.now: list[WorkloadStatus] = []

    async def statuses(self) -> tuple[WorkloadStatus, ...]:
        return tuple(self.now)


class Publisher:
    def __init__(self) -> None:
        self.sent: list[CommandResult] = []
        self.down = False
        self.refuse = False

    async def __call__(self, result: CommandResult) -> ResultRecorded:
        if self.down:
            raise Unavailable("no NATS")
        self.sent.append(result)
        if self.refuse:
            raise InvalidInput("refused")
        return ResultRecorded(outcome="recorded")


def status(**kw: object) -> WorkloadStatus:
    base = WorkloadStatus(
        kind="tenant", project="p", name="t1", op_id="op-1", generation=1, state="running", settled=False
    )
    return replace(base, **kw)  # type: ignore[arg-type]


async def test_each_change_is_reported_once() -> None:
    driver, publish = FakeDriver(), Publisher()
    reporter = StatusReporter("c1", driver, publish, clock=lambda: 5.0)
    driver.now = [status(reason="ContainersNotReady", message="starting")]
    [first] = await reporter.check()
    assert (first.settled, first.reason, first.applied, first.ok, first.generation) == (
        False,
        "ContainersNotReady",
        False,
        True,
        1,
    )
    assert await reporter.check() == [], "nothing new"
    driver.now = [status(reason="ContainersNotReady", message="still starting")]
    assert await reporter.check() == [], "a new message alone is no news"
    driver.now = [status(settled=True, version="v1.36.0")]
    [ready] = await reporter.check()
    assert ready.settled and ready.version == "v1.36.0" and ready.cluster == "c1"
    assert publish.sent[-1] == ready and len(publish.sent) == 2


async def test_what_the_command_path_said_counts() -> None:
    driver, publish = FakeDriver(), Publisher()
    reporter = StatusReporter("c1", driver, publish)
    driver.now = [status(settled=True, version="v1.36")]
    reporter.note(
        CommandResult(
            op_id="op-1", cluster="c1", kind="tenant", project="p", name="t1", generation=1, ok=True, version="v1.36"
        )
    )
    assert await reporter.check() == [], "the command's own result said it already"


async def test_a_deleted_namespace_is_reported_gone_and_failures_are_retried() -> None:
    driver, publish = FakeDriver(), Publisher()
    reporter = StatusReporter("c1", driver, publish)
    driver.now = [status(state="deleted", generation=4, op_id="op-4", reason="Terminating")]
    publish.down = True
    assert await reporter.check() == []
    publish.down = False
    [leaving] = await reporter.check()
    assert (leaving.state, leaving.settled) == ("deleted", False)
    driver.now = []
    [gone] = await reporter.check()
    assert (gone.state, gone.settled, gone.generation, gone.op_id) == ("deleted", True, 4, "op-4")
    assert await reporter.check() == []
    # a workload that vanished without being deleted by us is left to the inventory's resync
    driver.now = [status()]
    await reporter.check()
    driver.now = []
    assert await reporter.check() == []


async def test_a_refused_status_is_not_asked_again() -> None:
    driver, publish = FakeDriver(), Publisher()
    reporter = StatusReporter("c1", driver, publish)
    driver.now = [status(reason="ContainersNotReady")]
    publish.refuse = True
    await reporter.check()
    assert await reporter.check() == [] and len(publish.sent) == 1
