"""Two replicas creating the same key on a JetStream cluster: the stream's leader refuses the second create against
the first one's write it has proposed but not applied, so the key is taken yet not there to read for a moment.
The second creator gets a Conflict, and the admin bootstrap waits for the first one's write instead of ending
its service's start."""

from __future__ import annotations

from typing import Any

import pytest
from nats.js.errors import APIError, KeyNotFoundError, NotFoundError
from nats.js.kv import KeyValue

from schemas.errors import Conflict, Unavailable
from schemas.messages import AdminBootstrap, Membership, TeamRecord, TokenRecord, UserRecord
from services.access import logic
from services.access.service import Access
from services.bus import patience
from services.bus.kv import WRONG_LAST_SEQUENCE, Bucket
from services.bus.memory import MemoryBus
from services.bus.memory_parts import MemoryRecords

pytestmark = pytest.mark.usefixtures("patience_without_waiting")


class LeaderWithAWriteInFlight:
    """The two calls nats-py's ``KeyValue.create`` makes, answered as a stream leader answers while another
    creator's write of the key is proposed and not yet applied."""

    async def publish(self, subject: str, payload: bytes, **_: Any) -> object:
        raise APIError(code=400, err_code=WRONG_LAST_SEQUENCE, description="wrong last sequence: 1")

    async def get_msg(self, stream: str, **_: Any) -> object:
        raise NotFoundError(code=404, err_code=10037, description="no message found")


async def test_a_create_refused_for_a_write_in_flight_is_a_conflict() -> None:
    kv = KeyValue("tether-users", "KV_tether-users", "$KV.tether-users.", LeaderWithAWriteInFlight(), False)  # type: ignore[arg-type]
    bucket = Bucket(kv, UserRecord)
    with pytest.raises(Conflict, match="concurrently"):
        await bucket.create("admin", logic.new_user("admin", "", 0.0, platform_admin=True))


def test_a_key_value_error_is_no_reason_to_wait() -> None:
    # nats-py makes these without a code: asking for one must not become an AttributeError.
    assert not patience.busy(KeyNotFoundError())


class UsersWrittenElsewhere(MemoryRecords[UserRecord]):
    """The admin is being created by another replica: a create conflicts, and reads find it only later."""

    def __init__(self, unseen_reads: int) -> None:
        super().__init__("tether-users", UserRecord)
        self.unseen_reads = unseen_reads

    async def create(self, key: str, value: UserRecord) -> int:
        raise Conflict(f"{key!r} is being created concurrently")

    async def get(self, key: str) -> tuple[UserRecord, int] | None:
        if self.unseen_reads > 0:
            self.unseen_reads -= 1
            return None
        return logic.new_user(key, "", 0.0, platform_admin=True), 1


def access(users: MemoryRecords[UserRecord]) -> Access:
    return Access(
        MemoryBus(),
        users,
        MemoryRecords("tether-tokens", TokenRecord),
        MemoryRecords("tether-teams", TeamRecord),
        MemoryRecords("tether-members", Membership),
    )


async def test_the_admin_bootstrap_waits_for_another_replicas_create() -> None:
    service = access(UsersWrittenElsewhere(unseen_reads=2))
    admin = AdminBootstrap(name="admin", token=logic.new_token())
    with pytest.raises(Unavailable, match="another replica"):
        await service.bootstrap_admin(admin)
    principal = await patience.until_done("making the first platform admin", lambda: service.bootstrap_admin(admin))
    assert (principal.user, principal.platform_admin) == ("admin", True)
