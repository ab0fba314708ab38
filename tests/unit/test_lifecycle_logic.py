from __future__ import annotations

import pytest

from schemas.api import WorkloadIn
from schemas.errors import Conflict, Forbidden, InvalidInput, NotFound
from schemas.messages import (
    Capacity,
    ClusterHealth,
    ClusterRecord,
    CommandResult,
    InventoryItem,
    Membership,
    Presence,
    ProjectRecord,
    Quota,
    Resources,
    WorkloadCreate,
    WorkloadKind,
    WorkloadRecord,
)
from services.lifecycle import logic

NOW = 1000.0
MEMBERS = Membership(project="p1", users={"alice": "admin", "bob": "user", "carol": "viewer"}, teams={"devs": "user"})


def project(**kw) -> ProjectRecord:  # type: ignore[no-untyped-def]
    return ProjectRecord(name="p1", **kw)


def tenant(name: str = "t1", cluster: str = "c1", owner: str = "bob", **kw) -> WorkloadRecord:  # type: ignore[no-untyped-def]
    req = WorkloadCreate(kind="tenant", project="p1", name=name, created_by=owner, **kw)
    return logic.new_record(req, project(), cluster, MEMBERS, NOW, f"op-{name}")


def result(r: WorkloadRecord, ok: bool = True, **kw) -> CommandResult:  # type: ignore[no-untyped-def]
    fields = dict(
        op_id=r.op_id,
        cluster=r.spec.cluster,
        kind=r.spec.kind,
        project=r.spec.project,
        name=r.spec.name,
        generation=r.generation,
        ok=ok,
        state=r.spec.state,
        version=r.spec.version,
        at=NOW,
    )
    fields.update(kw)
    return CommandResult(**fields)  # type: ignore[arg-type]


def cluster(name: str, labels: dict[str, str] | None = None, state: str = "connected") -> ClusterRecord:
    return ClusterRecord(name=name, labels=labels or {}, state=state)  # type: ignore[arg-type]


def presence(name: str, online: bool = True, cpu: float = 4, memory: int = 16 << 30) -> Presence:
    return Presence(
        cluster=name,
        online=online,
        health=ClusterHealth(nodes_ready=1, nodes_total=1, capacity=Capacity(cpu=cpu, memory=memory)),
    )


# --- create, phases, results ----------------------------------------------------------------------
def test_a_new_tenant_is_pending_until_the_agent_reports() -> None:
    r = tenant()
    assert r.generation == 1 and r.phase == "Pending" and r.spec.version == logic.DEFAULT_VERSION
    observed, gone = logic.observe(r, result(r), NOW + 1)
    assert not gone and observed.phase == "Ready" and logic.in_sync(observed)
    ready = next(c for c in observed.conditions if c.type == "Ready")
    assert ready.status == "True"


def test_sleep_wake_upgrade_delete_bump_generations_and_phases() -> None:
    r, _ = logic.observe(tenant(version="v1.35"), result(tenant(version="v1.35")), NOW)
    slept = logic.act(r, "sleep", "", "op2", NOW)
    assert slept is not None and slept.generation == 2 and slept.spec.state == "sleeping"
    assert logic.act(slept, "sleep", "", "op3", NOW) is None  # already asleep: no new operation
    slept, _ = logic.observe(slept, result(slept), NOW)
    assert slept.phase == "Sleeping"
    woken = logic.act(slept, "wake", "", "op3", NOW)
    assert woken is not None and woken.spec.state == "running"
    woken, _ = logic.observe(woken, result(woken), NOW)
    up = logic.act(woken, "upgrade", "1.36", "op4", NOW)
    assert up is not None and up.spec.version == "v1.36" and up.phase == "Upgrading"
    deleting = logic.act(up, "delete", "", "op5", NOW)
    assert deleting is not None and deleting.phase == "Deleting"
    _, gone = logic.observe(deleting, result(deleting, state="deleted"), NOW)
    assert gone


def test_the_observed_phase_moves_with_the_clusters_reports_not_with_the_requests() -> None:
    created = tenant(version="v1.35")
    assert logic.observed_phase(created) is None, "nothing reported yet"
    ready, _ = logic.observe(created, result(created), NOW)
    assert logic.observed_phase(ready) == "Ready"
    asked = logic.act(ready, "sleep", "", "op2", NOW)
    assert asked is not None and asked.phase == "Sleeping" and logic.observed_phase(asked) == "Ready"
    slept, _ = logic.observe(asked, result(asked), NOW)
    assert logic.observed_phase(slept) == "Sleeping"
    waking = logic.act(slept, "wake", "", "op3", NOW)
    assert waking is not None and waking.phase == "Pending" and logic.observed_phase(waking) == "Sleeping"
    starting, _ = logic.observe(waking, result(waking, settled=False, reason="ContainerCreating"), NOW)
    assert logic.observed_phase(starting) == "Pending"
    woken, _ = logic.observe(starting, result(waking, applied=False), NOW)
    assert logic.observed_phase(woken) == "Ready"
    up = logic.act(woken, "upgrade", "1.36", "op4", NOW)
    assert up is not None and logic.observed_phase(up) == "Ready"
    upgrading, _ = logic.observe(up, result(up, settled=False), NOW)
    assert logic.observed_phase(upgrading) == "Upgrading"
    broken, _ = logic.observe(upgrading, result(up, ok=False, reason="Forbidden"), NOW)
    assert logic.observed_phase(broken) == "Failed"
    deleting = logic.act(woken, "delete", "", "op5", NOW)
    assert deleting is not None and logic.observed_phase(deleting) == "Ready"
    going, _ = logic.observe(deleting, result(deleting, state="deleted", settled=False), NOW)
    assert logic.observed_phase(going) == "Deleting"


def test_illegal_transitions_are_conflicts_naming_the_reason() -> None:
    deleting = logic.act(tenant(), "delete", "", "op2", NOW)
    assert deleting is not None
    with pytest.raises(Conflict, match="cannot wake tenant 't1': it is being deleted"):
        logic.act(deleting, "wake", "", "op3", NOW)
    assert logic.act(deleting, "delete", "", "op3", NOW) is None
    space = logic.new_record(WorkloadCreate(kind="space", project="p1", name="s1"), project(), "c1", MEMBERS, NOW, "o")
    with pytest.raises(InvalidInput, match="only tenant clusters can sleep"):
        logic.act(space, "sleep", "", "op", NOW)


@pytest.mark.parametrize(
    ("current", "target", "message"),
    [
        ("v1.36", "v1.35", "cannot downgrade"),
        ("v1.34", "v1.36", "one minor version at a time"),
        ("v1.36", "v1.36", "already runs"),
        ("v1.36", "2.0", "invalid Kubernetes version"),
        ("v1.36", "v1.99", "unsupported Kubernetes version"),
    ],
)
def test_bad_upgrades(current: str, target: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        logic.check_upgrade(current, target, "t1")


def test_a_failure_is_reported_and_cleared_by_a_later_success() -> None:
    r = tenant()
    failed, _ = logic.observe(r, result(r, ok=False, reason="Forbidden", message="no RBAC"), NOW)
    assert failed.phase == "Failed" and failed.failure is not None and failed.failure.reason == "Forbidden"
    ok, _ = logic.observe(failed, result(r), NOW)
    assert ok.phase == "Ready" and ok.failure is None


def test_stale_results_do_not_move_state_backwards() -> None:
    r = tenant()
    r2 = logic.act(r, "sleep", "", "op2", NOW)
    assert r2 is not None
    newer, _ = logic.observe(r2, result(r2), NOW)
    same, _ = logic.observe(newer, result(r), NOW)  # generation 1 arrives late
    assert same.observed == newer.observed


# --- access ------------------------------------------------------------------------------------------
def test_an_action_for_ones_own_only_is_refused_on_someone_elses_naming_the_owner() -> None:
    bobs = tenant(owner="bob")
    logic.check_owner(bobs, "")  # anyone's: a platform or project admin
    logic.check_owner(bobs, "bob")
    with pytest.raises(Forbidden) as refused:
        logic.check_owner(bobs, "erin")
    assert refused.value.description == (
        "user 'erin' may manage only their own tenants and spaces in project 'p1' (this one belongs to 'bob')"
    )
    with pytest.raises(Forbidden):
        logic.check_owner(tenant(owner=""), "erin")  # a record from before owners were kept is nobody's own


def test_members_for_gives_admins_and_the_owner_admin_others_view() -> None:
    members = {m.subject: m.access for m in logic.members_for(MEMBERS, owner="bob")}
    assert members == {"user:alice": "admin", "user:bob": "admin", "user:carol": "view", "team:devs": "view"}
    members = {m.subject: m.access for m in logic.members_for(MEMBERS, owner="alice")}
    assert members["user:bob"] == "view"


def test_removing_a_member_bumps_the_generation_and_drops_them() -> None:
    r = tenant()
    fewer = Membership(project="p1", users={"alice": "admin", "bob": "user"})
    changed = logic.with_members(r, fewer, "op2", NOW)
    assert changed is not None and changed.generation == 2 and changed.operation == "access"
    assert "user:carol" not in {m.subject for m in changed.spec.members}
    assert logic.with_members(changed, fewer, "op3", NOW) is None


# --- quotas and placement ----------------------------------------------------------------------------
def test_quota_names_the_limit() -> None:
    p = project(quota=Quota(tenants=1, cpu=1.5, memory=3 << 30))
    records = [tenant()]
    with pytest.raises(Forbidden, match="allows 1 tenants"):
        logic.check_quota(p, records, "tenant", Resources(cpu=0.1))
    with pytest.raises(Forbidden, match=r"allows 1.5 CPU \(would use 2\)"):
        logic.check_quota(p, records, "space", Resources(cpu=1))
    with pytest.raises(Forbidden, match="allows 3Gi memory"):
        logic.check_quota(p, records, "space", Resources(memory=2 << 30))
    logic.check_quota(p, records, "space", Resources(cpu=0.5, memory=1 << 30))


def test_placement_picks_an_allowed_online_cluster_with_room() -> None:
    clusters = {n: cluster(n, {"env": "prod" if n != "c3" else "dev"}) for n in ("c1", "c2", "c3")}
    seen = {"c1": presence("c1", cpu=2), "c2": presence("c2", cpu=8), "c3": presence("c3", cpu=64)}
    p = project(cluster_selector={"env": "prod"})
    assert logic.place(p, "", clusters, seen, [], Resources(cpu=1)) == "c2"  # most free CPU, c3 not allowed
    with pytest.raises(Forbidden, match="may not use cluster 'c3'"):
        logic.place(p, "c3", clusters, seen, [], Resources(cpu=1))
    with pytest.raises(NotFound, match="cluster 'nope' not found"):
        logic.place(p, "nope", clusters, seen, [], Resources(cpu=1))
    with pytest.raises(Conflict, match="has room"):
        logic.place(p, "", clusters, seen, [], Resources(cpu=100))
    offline = {k: presence(k, online=False) for k in seen}
    with pytest.raises(Conflict, match="no online cluster"):
        logic.place(p, "", clusters, offline, [], Resources(cpu=1))
    # Naming an offline cluster is fine: the command waits for its agent.
    assert logic.place(p, "c1", clusters, offline, [], Resources(cpu=1)) == "c1"


def test_placement_counts_what_is_already_there() -> None:
    clusters = {"c1": cluster("c1"), "c2": cluster("c2")}
    seen = {"c1": presence("c1", cpu=4), "c2": presence("c2", cpu=3)}
    records = [tenant(f"t{i}", cluster="c1") for i in range(3)]  # 3 CPU used on c1
    assert logic.place(project(), "", clusters, seen, records, Resources(cpu=1)) == "c2"


# --- reconciliation ------------------------------------------------------------------------------------
def item(name: str, generation: int = 1, state: str = "running") -> InventoryItem:
    return InventoryItem(kind="tenant", project="p1", name=name, generation=generation, state=state)  # type: ignore[arg-type]


def test_a_failure_is_asked_again_without_it_once_per_inventory() -> None:
    failed, _ = logic.observe(tenant(), result(tenant(), ok=False, reason="Boom", message="no"), NOW)
    assert failed.failure is not None and failed.phase == "Failed"
    again = logic.resend(failed, NOW + 120, seen_at=NOW + 110)
    # The record the agent applies once more: without the failure it reported (with it, the agent takes the
    # record for lifecycle's write of its own report), Pending until the cluster answers.
    assert again is not None and again.failure is None and again.phase == "Pending"
    assert again.generation == failed.generation and again.op_id == failed.op_id


def test_reconcile_resends_missing_and_stale_and_deletes_orphans() -> None:
    a, b = tenant("a"), tenant("b")
    b2 = logic.act(b, "sleep", "", "op", NOW)
    assert b2 is not None
    plan = logic.reconcile([a, b2], [item("b", 1), item("zombie")], empty_since=None, now=NOW, grace=600)
    assert {r.spec.name for r in plan.resend} == {"a", "b"}
    assert [i.name for i in plan.orphans] == ["zombie"]
    assert not plan.held_back


def test_reconcile_never_deletes_everything_when_desired_is_empty() -> None:
    plan = logic.reconcile([], [item("x"), item("y")], empty_since=NOW, now=NOW + 10, grace=600)
    assert plan.held_back and plan.orphans == []
    later = logic.reconcile([], [item("x"), item("y")], empty_since=NOW, now=NOW + 601, grace=600)
    assert not later.held_back and len(later.orphans) == 2


def test_reconcile_forgets_deletions_already_done() -> None:
    gone = logic.act(tenant("a"), "delete", "", "op", NOW)
    assert gone is not None
    plan = logic.reconcile([gone], [], empty_since=None, now=NOW, grace=600)
    assert plan.done == [gone] and plan.resend == []


def test_due_for_sleep() -> None:
    r = tenant(sleep_after=60)
    assert not logic.due_for_sleep(r, NOW + 59)
    assert logic.due_for_sleep(r, NOW + 61)
    slept = logic.act(r, "sleep", "", "op", NOW + 61)
    assert slept is not None and not logic.due_for_sleep(slept, NOW + 1000)
    assert not logic.due_for_sleep(tenant("never"), NOW + 10**6)


# --- a tenant is Ready only once its control plane is; a delete is done only once it is gone -------------
def test_applied_but_not_ready_is_pending_with_the_clusters_reason() -> None:
    r = tenant()
    r, _ = logic.observe(r, result(r, settled=False, reason="Unschedulable", message="0/2 nodes"), NOW)
    assert logic.in_sync(r) and r.phase == "Pending"
    ready = next(c for c in r.conditions if c.type == "Ready")
    assert (ready.status, ready.reason, ready.message) == ("False", "Unschedulable", "0/2 nodes")
    r, _ = logic.observe(r, result(r, applied=False, version="v1.36.0"), NOW + 1)
    assert r.phase == "Ready" and r.observed is not None and r.observed.version == "v1.36.0"


def test_an_upgrade_is_upgrading_until_the_new_control_plane_is_ready() -> None:
    r = tenant(version="v1.35")
    r, _ = logic.observe(r, result(r), NOW)
    up = logic.act(r, "upgrade", "v1.36", "op-up", NOW)
    assert up is not None
    up, _ = logic.observe(up, result(up, settled=False, reason="ContainersNotReady"), NOW)
    assert up.phase == "Upgrading"
    up, _ = logic.observe(up, result(up, applied=False), NOW)
    assert up.phase == "Ready"


def test_deleting_until_the_cluster_says_the_namespace_is_gone() -> None:
    r = tenant()
    r, _ = logic.observe(r, result(r), NOW)
    d = logic.act(r, "delete", "", "op-del", NOW)
    assert d is not None
    d, gone = logic.observe(d, result(d, state="deleted", settled=False, reason="Terminating"), NOW)
    assert not gone and d.phase == "Deleting" and not logic.is_tombstone(d)
    d, gone = logic.observe(d, result(d, state="deleted", applied=False), NOW + 5)
    assert gone and logic.is_tombstone(d)


def test_a_namespace_on_its_way_out_is_no_orphan() -> None:
    plan = logic.reconcile([], [item("x", 3, "deleted")], empty_since=0.0, now=NOW, grace=0.0)
    assert plan.orphans == []
    r = tenant()
    d = logic.act(r, "delete", "", "op-del", NOW)
    assert d is not None
    plan = logic.reconcile([d], [item("t1", d.generation, "deleted")], empty_since=None, now=NOW, grace=600)
    assert plan.done == [] and plan.resend == [], "still terminating: neither re-sent nor forgotten"


def test_supported_versions_are_published_from_one_place() -> None:
    from schemas import versions

    assert versions.supported_versions() == [f"v1.{m}" for m in logic.SUPPORTED_MINORS]
    assert logic.DEFAULT_VERSION in versions.supported_versions()


@pytest.mark.parametrize(
    ("kind", "cpu", "memory", "want"),
    [
        ("tenant", 2.0, None, (2.0, 2 * 1024**3)),  # only cpu: the kind's default memory, 2 Gi (never 1 Gi)
        ("tenant", None, 4 * 1024**3, (1.0, 4 * 1024**3)),
        ("tenant", None, None, (1.0, 2 * 1024**3)),
        ("space", 2.0, None, (2.0, 1024**3)),
        ("space", None, None, (0.5, 1024**3)),
    ],
)
def test_defaults_fill_only_what_a_create_leaves_out(
    kind: WorkloadKind, cpu: float | None, memory: int | None, want: tuple[float, int]
) -> None:
    req = WorkloadCreate(kind=kind, project="p", name="w", cpu=cpu, memory=memory)
    got = logic.resources_for(req)
    assert (got.cpu, got.memory) == want
    record = logic.new_record(req, ProjectRecord(name="p"), "c1", Membership(project="p"), 1.0, "op")
    assert record.spec.resources == got


def test_the_apis_schema_says_lifecycles_defaults() -> None:
    """The API passes what is given and documents the defaults; the numbers are lifecycle's."""
    fields = WorkloadIn.model_fields
    tenant, space = logic.DEFAULT_RESOURCES["tenant"], logic.DEFAULT_RESOURCES["space"]
    assert f"default {tenant.cpu:g} (tenant cluster), {space.cpu:g} (space)" in str(fields["cpu"].description)
    gib = 1024**3
    memory = f"default {tenant.memory // gib} Gi (tenant cluster), {space.memory // gib} Gi (space)"
    assert memory in str(fields["memory"].description)


# --- operations superseded before their cluster saw them (desired state is level-triggered) ---------------
def toggled(r: WorkloadRecord, times: int) -> WorkloadRecord:
    """``times`` sleep/wake operations on ``r`` while its cluster reports nothing."""
    for i in range(times):
        nxt = logic.act(r, "sleep" if r.spec.state == "running" else "wake", "", f"op-{r.generation + 1}", NOW + i)
        assert nxt is not None
        r = nxt
    return r


def test_an_operation_written_over_before_its_cluster_saw_it_is_remembered() -> None:
    r = tenant()
    applied, _ = logic.observe(r, result(r), NOW)
    r = toggled(applied, 3)  # generations 2, 3, 4: the cluster saw none of them
    assert r.generation == 4
    assert [(u.op_id, u.generation, u.operation) for u in r.earlier] == [("op-2", 2, "sleep"), ("op-3", 3, "wake")]
    # An operation its cluster did see (applied, or failed) is not remembered.
    seen, _ = logic.observe(r, result(r, ok=False, reason="Broken"), NOW)
    assert [u.generation for u in toggled(seen, 1).earlier] == [2, 3]


def test_a_result_ends_the_operations_below_its_generation_as_superseded() -> None:
    r = toggled(tenant(), 5)  # generations 1 (create) to 6, none seen
    assert [u.generation for u in r.earlier] == [1, 2, 3, 4, 5]
    # The cluster was away, came back and applied generation 4 (1-3 left the bucket's history meanwhile).
    at_4 = result(r, op_id="op-4", generation=4, state="running")
    observed, _ = logic.observe(r, at_4, NOW)
    settled, superseded = logic.settle_earlier(observed, at_4)
    assert [(u.op_id, u.generation) for u in superseded] == [("op-t1", 1), ("op-2", 2), ("op-3", 3)]
    assert [u.generation for u in settled.earlier] == [5]  # 4 ended with its result; 5 may still come
    # The newest applied: nothing earlier is left; a repeat of the same result ends nothing more.
    last = result(r)
    done, more = logic.settle_earlier(logic.observe(settled, last, NOW)[0], last)
    assert [u.generation for u in more] == [5] and done.earlier == () and logic.in_sync(done)
    assert logic.settle_earlier(done, last) == (done, ())
    # A result from the future (refused elsewhere) ends nothing.
    assert logic.settle_earlier(r, result(r, generation=r.generation + 1)) == (r, ())


def test_operations_pushed_out_of_a_full_memory_end_superseded_by_the_newest() -> None:
    r = toggled(tenant(), logic.MAX_EARLIER)
    assert len(r.earlier) == logic.MAX_EARLIER and logic.pushed_out(tenant(), r) == ()
    nxt = toggled(r, 1)
    assert len(nxt.earlier) == logic.MAX_EARLIER
    assert [u.op_id for u in logic.pushed_out(r, nxt)] == ["op-t1"]
    assert nxt.earlier[0].generation == 2


def test_a_confirmed_deletion_forgets_the_earlier_operations() -> None:
    r = toggled(tenant(), 2)
    deleting = logic.act(r, "delete", "", "op-del", NOW)
    assert deleting is not None and len(deleting.earlier) == 3
    assert logic.confirm_deleted(deleting, NOW).earlier == ()


def test_an_inventory_taken_before_a_deletion_finished_names_no_orphan() -> None:
    """A connect's inventory listed a tenant whose delete was in flight; by the time lifecycle read it the
    delete was done. That listing is the deleted object, not an orphan: no second deletion is asked for (a
    generation no operation asked for, seen in the clustered fault test). An inventory taken after the
    deletion that still lists the object is an orphan (restored by hand, say)."""
    deleting = logic.act(tenant(), "delete", "", "op2", NOW)
    assert deleting is not None
    tomb = logic.confirm_deleted(deleting, NOW + 5)
    assert logic.is_tombstone(tomb)
    assert logic.deleted_since(tomb, seen_at=NOW + 4)
    assert logic.deleted_since(tomb, seen_at=NOW + 5)
    assert not logic.deleted_since(tomb, seen_at=NOW + 6)
    assert not logic.deleted_since(deleting, seen_at=NOW), "a deletion not yet done is no tombstone"
    assert not logic.deleted_since(tenant(), seen_at=NOW)
