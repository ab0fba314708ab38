"""The access service against a real nats-server: users, tokens, teams, memberships, decisions."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from schemas import subjects
from schemas.errors import Conflict, InvalidInput, NotFound, Unauthenticated, Unavailable
from schemas.messages import (
    AdminBootstrap,
    Authenticate,
    Authorize,
    Decision,
    Empty,
    MemberChange,
    Membership,
    MembershipChanged,
    NameRequest,
    Principal,
    TeamCreate,
    TeamList,
    TeamMemberAdd,
    TeamRecord,
    UserCreate,
    UserCreated,
    UserList,
    VisibleProjects,
    decode,
)
from services.access.service import Settings, run
from services.bus import BusSettings, call
from services.bus.endpoints import ERROR_CODE, ERROR_TEXT
from services.bus.settings import ServiceSettings
from services.platform.natsd import NatsServer
from tests.bucket_reading import live_entries

A = subjects.Access
ADMIN_TOKEN = "tat_" + "a" * 43


@dataclass
class Svc:
    nc: Client
    js: JetStreamContext

    async def user(self, name: str, *, admin: bool = False) -> UserCreated:
        return await call(self.nc, A.USER_CREATE, UserCreate(name=name, platform_admin=admin), UserCreated)

    async def member(self, project: str, role: str | None, *, user: str = "", team: str = "") -> Membership:
        change = MemberChange(project=project, user=user, team=team, role=role)  # type: ignore[arg-type]
        return await call(self.nc, A.MEMBER_SET, change, Membership)

    async def authorize(self, user: str, action: str, project: str = "", owner: str = "") -> Decision:
        req = Authorize(user=user, action=action, project=project, owner=owner)
        return await call(self.nc, A.AUTHORIZE, req, Decision)

    async def visible(self, user: str) -> VisibleProjects:
        return await call(self.nc, A.VISIBLE, NameRequest(name=user), VisibleProjects)

    async def membership_events(self) -> list[tuple[MembershipChanged, str]]:
        """Every MembershipChanged in the EVENTS stream, with its Nats-Msg-Id."""
        info = await self.js.stream_info(subjects.EVENTS_STREAM, subjects_filter=subjects.MEMBERSHIP_CHANGED)
        expected = (info.state.subjects or {}).get(subjects.MEMBERSHIP_CHANGED, 0)
        out: list[tuple[MembershipChanged, str]] = []
        if not expected:
            return out
        sub = await self.js.subscribe(subjects.MEMBERSHIP_CHANGED, ordered_consumer=True)
        try:
            for _ in range(expected):
                msg = await sub.next_msg(timeout=5)
                out.append((decode(msg.data, MembershipChanged), (msg.headers or {}).get("Nats-Msg-Id", "")))
        finally:
            await sub.unsubscribe()
        return out


@pytest.fixture
async def svc(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[Svc]:
    await nats_server.wait_ready()
    token_file = tmp_path / "admin.token"
    token_file.write_text(ADMIN_TOKEN + "\n")
    settings = Settings(common=ServiceSettings(bus=BusSettings(url=nats_server.url)), admin_token_file=token_file)
    ready = asyncio.Event()
    task = asyncio.create_task(run(settings, ready=ready))
    nc: Client | None = None
    try:
        await asyncio.wait_for(ready.wait(), timeout=20)
        nc = await nats.connect(nats_server.url)
        yield Svc(nc, nc.jetstream())
    finally:
        if nc is not None:
            await nc.drain()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _raw_values(js: JetStreamContext, bucket: str) -> list[bytes]:
    """Every live key and value of ``bucket``, as bytes."""
    out: list[bytes] = []
    for key, value in (await live_entries(js, bucket)).items():
        out += [key.encode(), value]
    return out


async def test_user_create_returns_the_token_once_and_it_authenticates(svc: Svc) -> None:
    created = await svc.user("bob")
    assert created.user.name == "bob" and not created.user.platform_admin
    assert created.token.startswith("tat_")
    who = await call(svc.nc, A.AUTHENTICATE, Authenticate(token=created.token), Principal)
    assert who == Principal(user="bob", platform_admin=False)
    # Never stored in clear: neither as a key nor inside any value.
    for bucket in (subjects.BUCKET_TOKENS, subjects.BUCKET_USERS):
        for raw in await _raw_values(svc.js, bucket):
            assert created.token.encode() not in raw
    listed = await call(svc.nc, A.USER_LIST, Empty(), UserList)
    assert [u.name for u in listed.users] == ["admin", "bob"]
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        await call(svc.nc, A.AUTHENTICATE, Authenticate(token=created.token[:-2] + "xx"), Principal)


async def test_admin_is_bootstrapped_from_the_file_idempotently(svc: Svc) -> None:
    who = await call(svc.nc, A.AUTHENTICATE, Authenticate(token=ADMIN_TOKEN), Principal)
    assert who == Principal(user="admin", platform_admin=True)
    # Not reachable over the bus: only the token file bootstraps an admin.
    with pytest.raises(Unavailable):
        await call(svc.nc, A.BOOTSTRAP_ADMIN, AdminBootstrap(name="admin", token=ADMIN_TOKEN), Principal, timeout=0.5)
    assert [u.name for u in (await call(svc.nc, A.USER_LIST, Empty(), UserList)).users] == ["admin"]
    assert (await svc.visible("admin")).all


async def test_duplicate_user_is_a_conflict_and_mints_no_token(svc: Svc) -> None:
    await svc.user("bob")
    tokens_before = len(await _raw_values(svc.js, subjects.BUCKET_TOKENS))
    with pytest.raises(Conflict, match="user 'bob' already exists"):
        await svc.user("bob", admin=True)
    assert len(await _raw_values(svc.js, subjects.BUCKET_TOKENS)) == tokens_before
    with pytest.raises(InvalidInput, match="invalid user name 'Bob'"):
        await svc.user("Bob")


async def test_teams(svc: Svc) -> None:
    await svc.user("bob")
    await svc.user("carol")
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        await call(svc.nc, A.TEAM_CREATE, TeamCreate(name="ops", members=("bob", "ghost")), TeamRecord)
    team = await call(svc.nc, A.TEAM_CREATE, TeamCreate(name="ops", members=("bob",)), TeamRecord)
    assert team.members == ("bob",)
    with pytest.raises(Conflict, match="team 'ops' already exists"):
        await call(svc.nc, A.TEAM_CREATE, TeamCreate(name="ops"), TeamRecord)
    for _ in range(2):  # idempotent
        team = await call(svc.nc, A.TEAM_ADD_MEMBER, TeamMemberAdd(team="ops", user="carol"), TeamRecord)
        assert team.members == ("bob", "carol")
    with pytest.raises(NotFound, match="team 'nope' not found"):
        await call(svc.nc, A.TEAM_ADD_MEMBER, TeamMemberAdd(team="nope", user="bob"), TeamRecord)
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        await call(svc.nc, A.TEAM_ADD_MEMBER, TeamMemberAdd(team="ops", user="ghost"), TeamRecord)
    teams = await call(svc.nc, A.TEAM_LIST, Empty(), TeamList)
    assert [(t.name, t.members) for t in teams.teams] == [("ops", ("bob", "carol"))]
    # A team change is not a membership change: no event.
    assert await svc.membership_events() == []


async def test_member_set_remove_get_and_visible(svc: Svc) -> None:
    await svc.user("bob")
    await call(svc.nc, A.TEAM_CREATE, TeamCreate(name="ops", members=("bob",)), TeamRecord)
    empty = await call(svc.nc, A.MEMBERS_GET, NameRequest(name="p1"), Membership)
    assert empty == Membership(project="p1")
    assert await svc.member("p1", "viewer", user="bob") == Membership(project="p1", users={"bob": "viewer"})
    await svc.member("p2", "user", team="ops")
    await svc.member("p3", "admin", user="bob")
    assert (await svc.visible("bob")) == VisibleProjects(
        all=False, projects={"p1": "viewer", "p2": "user", "p3": "admin"}
    )
    removed = await svc.member("p3", None, user="bob")
    assert removed == Membership(project="p3")
    with pytest.raises(NotFound, match="user 'bob' is not a member of project 'p3'"):
        await svc.member("p3", None, user="bob")
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        await svc.member("p1", "user", user="ghost")
    with pytest.raises(NotFound, match="team 'devs' not found"):
        await svc.member("p1", "user", team="devs")
    with pytest.raises(InvalidInput, match="exactly one of user or team"):
        await svc.member("p1", "user", user="bob", team="ops")
    with pytest.raises(InvalidInput, match="invalid project name"):
        await svc.member("P1", "user", user="bob")
    got = await call(svc.nc, A.MEMBERS_GET, NameRequest(name="p2"), Membership)
    assert got == Membership(project="p2", teams={"ops": "user"})
    assert (await svc.visible("bob")).projects == {"p1": "viewer", "p2": "user"}
    with pytest.raises(NotFound, match="user 'ghost' not found"):
        await svc.visible("ghost")


async def test_authorize_through_a_team_role(svc: Svc) -> None:
    await svc.user("bob")
    await svc.user("carol")
    await call(svc.nc, A.TEAM_CREATE, TeamCreate(name="ops", members=("carol",)), TeamRecord)
    await svc.member("p1", "viewer", user="bob")
    await svc.member("p1", "admin", team="ops")

    denied = await svc.authorize("bob", "workload.create", "p1")
    assert not denied.allowed and denied.role == "viewer"
    assert denied.reason == "user 'bob' is a viewer in project 'p1'; workload.create needs role user or admin"

    # bob joins ops: viewer directly, admin through the team.
    await call(svc.nc, A.TEAM_ADD_MEMBER, TeamMemberAdd(team="ops", user="bob"), TeamRecord)
    allowed = await svc.authorize("bob", "project.manage", "p1")
    assert allowed.allowed and allowed.role == "admin"
    assert (await svc.authorize("carol", "workload.manage", "p1", owner="bob")).allowed

    outsider = await svc.authorize("carol", "project.read", "p2")
    assert not outsider.allowed and outsider.reason == "user 'carol' is not a member of project 'p2'"
    assert not (await svc.authorize("bob", "cluster.connect")).allowed
    assert (await svc.authorize("bob", "cluster.read")).allowed
    assert (await svc.authorize("admin", "cluster.connect")).allowed
    ghost = await svc.authorize("ghost", "cluster.read")
    assert not ghost.allowed and "unknown user" in ghost.reason
    with pytest.raises(InvalidInput, match=r"unknown action 'tenant\.nuke'"):
        await svc.authorize("bob", "tenant.nuke", "p1")
    with pytest.raises(InvalidInput, match="needs a project"):
        await svc.authorize("bob", "project.read")


async def test_membership_changes_are_announced_once_per_revision(svc: Svc) -> None:
    await svc.user("bob")
    await svc.member("p1", "viewer", user="bob")
    await svc.member("p1", "viewer", user="bob")  # no change: the same revision, deduplicated
    await svc.member("p1", "user", user="bob")
    await svc.member("p1", None, user="bob")
    with pytest.raises(NotFound):
        await svc.member("p1", None, user="bob")  # re-announces the current revision: deduplicated
    # Published (and acknowledged by the stream) before each reply.
    events = await svc.membership_events()
    assert [e.project for e, _ in events] == ["p1"] * 3
    ids = [msg_id for _, msg_id in events]
    assert len(set(ids)) == 3 and all(i.startswith("members-p1-") for i in ids)


@pytest.mark.parametrize(
    "payload", [b"", b"{not json", b'{"type":"member-change.v1","project":42}', b"\xff\xfe", b"[]"]
)
async def test_malformed_requests_get_400_and_the_service_keeps_answering(svc: Svc, payload: bytes) -> None:
    for subject in (A.USER_CREATE, A.MEMBER_SET, A.AUTHORIZE, A.TEAM_CREATE, A.VISIBLE, A.AUTHENTICATE):
        reply = await svc.nc.request(subject, payload, timeout=5)
        headers = reply.headers or {}
        assert headers.get(ERROR_CODE) == "400", (subject, headers)
        assert headers.get(ERROR_TEXT)
    # Wrong message type on the right subject: also a clear 400.
    reply = await svc.nc.request(A.MEMBER_SET, b'{"type":"user-create.v1","name":"x"}', timeout=5)
    assert (reply.headers or {}).get(ERROR_CODE) == "400"
    created = await svc.user("still-fine")
    assert created.user.name == "still-fine"
