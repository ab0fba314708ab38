"""The connected clusters' consumers put right once the registry has started: an earlier version's made again.

An agent's consumer is looked up, and made again when its config is not this version's
(``services.bus.streams.ensure_agent_consumer``), only when the agent asks for it: after its first connect,
or when a fetch finds it gone. Agents that stay connected through an upgrade of the services say they are
bound, so they kept an earlier version's consumer: until 2026-12-05 one whose delivery and ack state was
rewritten to a file, fsynced, after each delivery and each ack (36 % of nats-server's CPU at 229 commands a
second at 1,000 agents). A memory one is made again at the server's next restart, which an upgrade of the
services need not include.

So, once per start and after the fleet's reconnects have settled (``delay``), the registry lists the agents'
consumers (each desired-state stream's, 256 to a JetStream API request: ~48 requests for 10,000 clusters, where
a look-up each took 10,000 and eight minutes at the pace below) and makes again, ``rate`` a second, those of
another config whose cluster it knows: a delete and a create each. The agent of a consumer made again finds it
gone at its next fetch (409, at once), says so in its hello and is given the new one, which starts from each
object's last record: what it had applied already is acknowledged without touching its cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from schemas.errors import TetherError, describe
from services.bus import Bus

logger = logging.getLogger(__name__)


async def sweep_consumers(bus: Bus, clusters: Callable[[], list[str]], *, delay: float, rate: float) -> int:
    """After ``delay`` seconds, make again (``rate`` a second) the consumers of ``clusters()`` that are of
    another config; how many were made again. A failure is logged and the walk goes on."""
    await asyncio.sleep(delay)
    began = time.monotonic()
    try:
        stale = set(await bus.stale_agent_consumers(pause=1.0 / rate))
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # JetStream busy or restarting: each agent's own asking still covers its consumer
        logger.warning("agents' consumers not checked: listing them failed: %s", _text(exc))
        return 0
    listed = time.monotonic() - began
    names = [name for name in clusters() if name in stale]
    made = failed = 0
    for name in names:
        try:
            made += await bus.ensure_agent_consumer(name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failed += 1
            logger.debug("making the consumer of %s again: %s", name, _text(exc))
        await asyncio.sleep(1.0 / rate)
    logger.info(
        "agents' consumers listed (%.1fs): %d of another config, %d made again with this version's, %d failed",
        listed,
        len(stale),
        made,
        failed,
    )
    return made


def _text(exc: Exception) -> str:
    return exc.description if isinstance(exc, TetherError) else describe(exc)
