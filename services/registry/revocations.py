"""The account the registry sends nats-server: every disconnected agent's NATS user revoked in it, so the server
closes that agent's links and refuses its credential from then on."""

from __future__ import annotations

import asyncio
import itertools
import logging

from schemas.errors import describe
from schemas.messages import ClusterRecord
from schemas.retrying import backoff_delay
from services.bus import Bus, Records
from services.bus.identity import Trust
from services.registry import logic

logger = logging.getLogger(__name__)

PUSH_RETRY_BASE = 1.0
"""Seconds before the first retry of the account push at start (doubling, at most 30 s)."""


class AccountPush:
    """Pushes the account over the system account's link; does nothing on an open NATS (no trust, no link)."""

    def __init__(self, trust: Trust | None, sys_bus: Bus | None, clusters: Records[ClusterRecord]) -> None:
        self.trust = trust
        self.sys_bus = sys_bus
        """Connected as the system account's user: the only one the server takes account updates from."""
        self.clusters = clusters
        self._pushing = asyncio.Lock()
        """One account push at a time, each reading the records inside: the last push sent is never built
        from an older read than one before it (a revocation is never undone by a slower, older push)."""

    async def push(self, *, unless_held: bool = False) -> None:
        """Send the account, with every disconnected agent revoked, to the server: it closes their links.

        ``unless_held``: not when the server holds the same account already (``logic.same_account``). At the
        registry's start it mostly does, and an update costs nats-server seconds with 10,000 agents connected
        ("Internal subscription on $SYS.REQ.CLAIMS.UPDATE took too long: 5.2s", every read loop of the account
        waiting meanwhile)."""
        if self.trust is None or self.sys_bus is None:
            return
        async with self._pushing:
            revoked = logic.revocations(list((await self.clusters.items()).values()))
            wanted = self.trust.account_jwt(revoked)
            if unless_held and logic.same_account(await self.sys_bus.held_account(self.trust.account_pub), wanted):
                logger.info("the account NATS holds is current (%d revoked agent(s)); not pushed", len(revoked))
                return
            await self.sys_bus.update_account(wanted)
        logger.info("account pushed to NATS with %d revoked agent(s)", len(revoked))

    async def push_at_start(self) -> None:
        """``push``, tried again until it is done: at a restart of the whole platform it runs while every agent
        reconnects, and one account update timed out after 5 s at 10,000 agents. That is no reason to stop
        serving hellos (the task's failure ended the registry); the server keeps the last account it was sent
        meanwhile."""
        for attempt in itertools.count():
            try:
                await self.push(unless_held=True)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("account not pushed to NATS: %s; trying again", describe(exc))
                await asyncio.sleep(backoff_delay(attempt, base=PUSH_RETRY_BASE, cap=30.0))
