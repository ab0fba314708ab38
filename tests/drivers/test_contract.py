"""What any driver must do, checked on every driver (``sim`` and ``kube``) through the ``Driver`` protocol only.

- apply makes a spec true: create, update, sleep, wake, delete; the outcome says what is on the cluster now;
- idempotent by generation: the same generation again, or an older one, changes nothing (``applied`` False);
  a newer one after a delete brings the workload back;
- inventory lists what the platform owns, at the generation and state last applied; a deleted workload leaves it;
- health and the cluster's UID are there to report, and the UID does not change.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.drivers import ApplyOutcome, Driver
from schemas.messages import Command, DesiredState, InventoryItem, Member, WorkloadKind
from tests.drivers.conftest import Subject
from tests.kube.helpers import command as kube_command

KINDS = ["space", "tenant"]


def command(
    subject: Subject,
    kind: WorkloadKind,
    generation: int,
    state: DesiredState = "running",
    *,
    name: str = "w1",
    version: str = "v1.35",
    members: tuple[Member, ...] = (),
) -> Command:
    """A command for a workload of the subject's own project."""
    return kube_command(kind, subject.project, name, generation, state, version=version, members=members)


async def listed(driver: Driver, project: str) -> dict[tuple[str, str], InventoryItem]:
    """The inventory of one project, by (kind, name)."""
    return {(i.kind, i.name): i for i in await driver.inventory() if i.project == project}


async def gone_from_inventory(driver: Driver, project: str, kind: str, name: str, timeout: float = 60.0) -> None:
    """Wait (with a deadline) until the workload is no longer in the inventory; meanwhile it may only be
    listed as ``deleted`` (a namespace still terminating)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (item := (await listed(driver, project)).get((kind, name))) is not None:
        assert item.state == "deleted", f"{kind} {name} listed {item.state} after its delete"
        assert loop.time() < deadline, f"{kind} {name} still listed {timeout:g}s after its delete"
        await asyncio.sleep(0.2)


def short(outcome: ApplyOutcome) -> tuple[bool, str, int]:
    return outcome.applied, outcome.state, outcome.generation


async def test_it_is_a_driver(subject: Subject) -> None:
    assert isinstance(subject.driver, Driver)
    assert subject.driver.name in {"sim", "kube"}


@pytest.mark.parametrize("kind", KINDS)
async def test_create_update_sleep_wake_delete(subject: Subject, kind: WorkloadKind) -> None:
    driver, project = subject.driver, subject.project

    created = await driver.apply(command(subject, kind, 1))
    assert short(created) == (True, "running", 1)
    item = (await listed(driver, project))[(kind, "w1")]
    assert (item.generation, item.state) == (1, "running")

    updated = await driver.apply(command(subject, kind, 2, members=(Member(subject="user:ann", access="admin"),)))
    assert short(updated) == (True, "running", 2)
    if kind == "tenant":
        upgraded = await driver.apply(command(subject, kind, 3, version="v1.36"))
        assert (upgraded.applied, upgraded.version) == (True, "v1.36")
        assert (await listed(driver, project))[(kind, "w1")].version == "v1.36"

    asleep = await driver.apply(command(subject, kind, 4, "sleeping", version="v1.36"))
    assert short(asleep) == (True, "sleeping", 4)
    item = (await listed(driver, project))[(kind, "w1")]
    assert (item.generation, item.state) == (4, "sleeping")

    awake = await driver.apply(command(subject, kind, 5, version="v1.36"))
    assert short(awake) == (True, "running", 5)
    assert (await listed(driver, project))[(kind, "w1")].state == "running"

    deleted = await driver.apply(command(subject, kind, 6, "deleted", version="v1.36"))
    assert (deleted.applied, deleted.state) == (True, "deleted")
    await gone_from_inventory(driver, project, kind, "w1")


@pytest.mark.parametrize("kind", KINDS)
async def test_the_same_or_an_older_generation_changes_nothing(subject: Subject, kind: WorkloadKind) -> None:
    driver, project = subject.driver, subject.project
    assert (await driver.apply(command(subject, kind, 1))).applied
    assert (await driver.apply(command(subject, kind, 3, "sleeping"))).applied

    again = await driver.apply(command(subject, kind, 3, "sleeping"))
    assert short(again) == (False, "sleeping", 3)
    late = await driver.apply(command(subject, kind, 2, "running", version="v1.99"))
    assert short(late) == (False, "sleeping", 3)
    item = (await listed(driver, project))[(kind, "w1")]
    assert (item.generation, item.state) == (3, "sleeping")
    if kind == "tenant":
        assert item.version == "v1.35"


async def test_a_delete_stays_deleted_until_a_newer_generation(subject: Subject) -> None:
    driver, project = subject.driver, subject.project
    assert (await driver.apply(command(subject, "space", 1))).applied
    assert (await driver.apply(command(subject, "space", 2, "deleted"))).applied
    # A redelivered delete and the create that came before it change nothing.
    assert (await driver.apply(command(subject, "space", 2, "deleted"))).state == "deleted"
    assert not (await driver.apply(command(subject, "space", 1))).applied
    await gone_from_inventory(driver, project, "space", "w1")
    # A newer generation brings it back.
    back = await driver.apply(command(subject, "space", 3))
    assert short(back) == (True, "running", 3)
    assert (await listed(driver, project))[("space", "w1")].generation == 3


async def test_deleting_what_does_not_exist_is_done(subject: Subject) -> None:
    out = await subject.driver.apply(command(subject, "space", 1, "deleted", name="never"))
    assert (out.applied, out.state) == (True, "deleted")
    assert ("space", "never") not in await listed(subject.driver, subject.project)


async def test_inventory_keeps_kinds_and_names_apart(subject: Subject) -> None:
    driver = subject.driver
    assert (await driver.apply(command(subject, "space", 1, name="x"))).applied
    assert (await driver.apply(command(subject, "tenant", 1, name="x"))).applied
    assert (await driver.apply(command(subject, "space", 1, name="y"))).applied
    assert sorted(await listed(driver, subject.project)) == [("space", "x"), ("space", "y"), ("tenant", "x")]


async def test_health_and_identity(subject: Subject) -> None:
    driver = subject.driver
    uid = await driver.cluster_uid()
    assert uid and await driver.cluster_uid() == uid
    health = await driver.health()
    assert health.api_reachable
    assert health.driver == driver.name and health.agent_version
    assert health.kubernetes_version.startswith("v")
    assert 0 <= health.nodes_ready <= health.nodes_total
