"""Services' rules checked on the in-memory bus: the real service code (its ``setup``, handlers, buckets and
events), no nats-server, no processes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas import subjects
from schemas.errors import Conflict, Unauthenticated
from schemas.messages import (
    Authenticate,
    Authorize,
    ClusterConnectInfo,
    ClusterCreate,
    ClusterEvent,
    ClusterList,
    ClusterRecord,
    ControlNotice,
    Decision,
    Empty,
    MemberChange,
    Membership,
    MembershipChanged,
    NameRequest,
    Principal,
    UserCreate,
    UserCreated,
)
from services.access import service as access
from services.bus import Delivery, Service, ServiceSettings
from services.bus.memory import MemoryBus
from services.registry import service as registry
from tests.harness import wait_for

A = subjects.Access
ADMIN_TOKEN = "tat_" + "a" * 43


@pytest.fixture
async def bus(tmp_path: Path) -> AsyncIterator[MemoryBus]:
    memory = MemoryBus()
    token = tmp_path / "admin.token"
    token.write_text(ADMIN_TOKEN + "\n")
    settings = access.Settings(admin_token_file=token)
    async with (
        Service("access", ServiceSettings(), lambda rt: access.setup(rt, settings), bus=memory),
        Service("registry", ServiceSettings(), lambda rt: registry.setup(rt, registry.Settings()), bus=memory),
    ):
        yield memory


async def test_access_rules_without_a_server(bus: MemoryBus) -> None:
    admin = await bus.call(A.AUTHENTICATE, Authenticate(token=ADMIN_TOKEN), Principal)
    assert admin == Principal(user="admin", platform_admin=True)
    bob = await bus.call(A.USER_CREATE, UserCreate(name="bob"), UserCreated)
    assert await bus.call(A.AUTHENTICATE, Authenticate(token=bob.token), Principal) == Principal(user="bob")
    with pytest.raises(Unauthenticated):
        await bus.call(A.AUTHENTICATE, Authenticate(token=bob.token[:-2] + "xx"), Principal)
    with pytest.raises(Conflict):
        await bus.call(A.USER_CREATE, UserCreate(name="bob"), UserCreated)

    viewer = await bus.call(A.AUTHORIZE, Authorize(user="bob", action="workload.create", project="p1"), Decision)
    assert not viewer.allowed
    start = datetime.now(UTC) - timedelta(seconds=1)
    change = MemberChange(project="p1", user="bob", role="user")
    for _ in range(2):  # the same revision announced twice: the stream keeps one
        await bus.call(A.MEMBER_SET, change, Membership)
    allowed = await bus.call(A.AUTHORIZE, Authorize(user="bob", action="workload.create", project="p1"), Decision)
    assert allowed.allowed
    announced = await bus.read_since(subjects.EVENTS_STREAM, subjects.MEMBERSHIP_CHANGED, start, MembershipChanged)
    assert [e.project for e in announced] == ["p1"]


async def test_registry_rules_without_a_server(bus: MemoryBus) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    info = await bus.call(subjects.Registry.CLUSTER_CREATE, ClusterCreate(name="edge-1"), ClusterConnectInfo)
    assert info.cluster.name == "edge-1" and info.token
    listed = await bus.call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList)
    assert [c.name for c in listed.clusters] == ["edge-1"]
    events = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), start, ClusterEvent)
    assert [(e.kind, e.cluster) for e in events] == [("registered", "edge-1")]
    notices: list[ControlNotice] = []

    async def heard(delivery: Delivery) -> None:
        notices.append(delivery.decode(ControlNotice))

    sub = await bus.subscribe(subjects.control("edge-1"), heard)
    gone = await bus.call(subjects.Registry.CLUSTER_DISCONNECT, NameRequest(name="edge-1"), ClusterRecord)
    assert gone.state == "disconnected" and not gone.token_hash
    again = await bus.call(subjects.Registry.CLUSTER_DISCONNECT, NameRequest(name="edge-1"), ClusterRecord)
    assert again == gone, "disconnecting twice changes nothing"
    events = await bus.read_since(subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), start, ClusterEvent)
    assert [(e.kind, e.cluster) for e in events] == [("registered", "edge-1"), ("disconnected", "edge-1")]
    await wait_for(lambda: len(notices) == 1, what="the revoked notice to the agent")
    assert notices[0].kind == "revoked"
    await sub.stop()
