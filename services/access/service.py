"""Access handlers and ``run``."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from schemas import subjects
from schemas.errors import Conflict, InvalidInput, Unauthenticated
from schemas.messages import AdminBootstrap, Authenticate, Principal, TokenRecord, UserRecord
from services import VERSION
from services.access import logic
from services.bus import Bucket, ServiceHost, Telemetry, connect, ensure_bucket
from services.bus.settings import ServiceSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Settings:
    common: ServiceSettings = field(default_factory=ServiceSettings)
    """Bus and telemetry."""

    admin_token_file: Path | None = None
    """File holding the first platform admin's API token; the admin is created from it on start."""

    admin_name: str = "admin"
    """Name of the first platform admin."""

    @classmethod
    def from_env(cls) -> Settings:
        import os

        path = os.environ.get("TETHER_ADMIN_TOKEN_FILE")
        return cls(
            common=ServiceSettings.from_env(),
            admin_token_file=Path(path) if path else None,
            admin_name=os.environ.get("TETHER_ADMIN_NAME", "admin"),
        )


class Access:
    def __init__(self, users: Bucket[UserRecord], tokens: Bucket[TokenRecord]) -> None:
        self.users = users
        self.tokens = tokens

    async def authenticate(self, req: Authenticate) -> Principal:
        try:
            logic.check_token_shape(req.token)
        except InvalidInput:
            raise Unauthenticated("malformed API token") from None
        found = await self.tokens.get(logic.token_hash(req.token))
        if found is None:
            raise Unauthenticated("unknown or revoked API token")
        user = await self.users.get(found[0].user)
        if user is None:
            raise Unauthenticated(f"the token's user {found[0].user!r} no longer exists")
        return Principal(user=user[0].name, platform_admin=user[0].platform_admin)

    async def bootstrap_admin(self, req: AdminBootstrap) -> Principal:
        """Idempotent: make sure the admin exists and the token maps to it."""
        logic.check_token_shape(req.token)
        now = time.time()
        try:
            await self.users.create(req.name, logic.new_user(req.name, "", now, platform_admin=True))
            logger.info("created platform admin %r", req.name)
        except Conflict:
            pass
        try:
            await self.tokens.create(logic.token_hash(req.token), TokenRecord(user=req.name, created_at=now))
        except Conflict:
            pass
        return Principal(user=req.name, platform_admin=True)


async def run(
    settings: Settings, *, telemetry: Telemetry | None = None, ready: asyncio.Event | None = None
) -> None:
    telemetry = telemetry or Telemetry.create("access", settings.common.telemetry)
    nc = await connect(settings.common.bus, "access")
    try:
        js = nc.jetstream()
        replicas = settings.common.bus.replicas
        users = await ensure_bucket(js, subjects.BUCKET_USERS, UserRecord, replicas=replicas, history=5)
        tokens = await ensure_bucket(js, subjects.BUCKET_TOKENS, TokenRecord, replicas=replicas)
        access = Access(users, tokens)
        if settings.admin_token_file is not None:
            token = settings.admin_token_file.read_text().strip()
            await access.bootstrap_admin(AdminBootstrap(name=settings.admin_name, token=token))
        host = ServiceHost(nc, "access", VERSION, telemetry.tracer(__name__))
        host.endpoint(subjects.Access.AUTHENTICATE, Authenticate, access.authenticate)
        async with host:
            logger.info("access ready")
            if ready:
                ready.set()
            await asyncio.Event().wait()
    finally:
        await nc.drain()
        telemetry.shutdown()
