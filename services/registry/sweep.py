"""The connected clusters' consumers put right once the registry has started: an earlier version's made again.

An agent's consumer is looked up, and made again when its config is not this version's
(``services.bus.streams.ensure_agent_consumer``), only when the agent asks for it: after its first connect,
or when a fetch finds it gone. Agents that stay connected through an upgrade of the services say they are
bound, so they kept an earlier version's consumer: until 2026-12-05 one whose delivery and ack state was
rewritten to a file, fsynced, after each delivery and each ack (36 % of nats-server's CPU at 229 commands a
second at 1,000 agents). A memory one is made again at the server's next restart, which an upgrade of the
services need not include.

So, once per start and after the fleet's reconnects have settled (``delay``), the registry walks the
connected clusters at ``rate`` a second: one JetStream API request each, and a delete and a create where the
config differs. The agent of a consumer made again finds it gone at its next fetch (409, at once), says so in
its hello and is given the new one, which starts from each object's last record: what it had applied already
is acknowledged without touching its cluster.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from schemas.errors import TetherError
from services.bus import Bus

logger = logging.getLogger(__name__)


async def sweep_consumers(bus: Bus, clusters: Callable[[], list[str]], *, delay: float, rate: float) -> int:
    """Look up each of ``clusters()``'s consumers (after ``delay`` seconds, ``rate`` a second) and make again
    those of another config; how many were made again. A failure is logged and the walk goes on."""
    await asyncio.sleep(delay)
    names = clusters()
    made = failed = 0
    for name in names:
        try:
            made += await bus.ensure_agent_consumer(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # JetStream busy or restarting: the agent's own asking covers this one
            failed += 1
            text = exc.description if isinstance(exc, TetherError) else str(exc) or type(exc).__name__
            logger.debug("checking the consumer of %s: %s", name, text)
        await asyncio.sleep(1.0 / rate)
    if made or failed:
        logger.info(
            "agents' consumers checked: %d of %d made again with this version's config, %d not checked",
            made,
            len(names),
            failed,
        )
    return made
