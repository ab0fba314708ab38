"""An agent's request waits for its link to come back instead of being asked into an outage (issue 17).

Asked while the link is down, a request is buffered by nats-py and waits its whole timeout for an answer that
cannot come; the result path counted each such timeout as the service's slowness and doubled its next wait,
so a result applied just before NATS restarted was recorded ~20 s after the others. ``Connection.linked``
is what the result path now waits on. Real nats-server, the agent's own connection.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.bus import connect
from agent.settings import AgentSettings
from services.platform.natsd import NatsServer
from tests.harness import wait_for


async def test_linked_is_true_while_up_waits_while_down_and_returns_at_the_reconnect(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    await nats_server.wait_ready()
    conn = await connect(AgentSettings(server=nats_server.url, state_dir=tmp_path / "agent"), "link-test")
    try:
        assert await conn.linked(0.1)

        nats_server.stop()
        await wait_for(lambda: not conn.is_connected, what="the link to drop", timeout=20)
        began = time.monotonic()
        assert not await conn.linked(0.3), "no link: it says so after its timeout"
        assert time.monotonic() - began >= 0.3

        waiting = asyncio.create_task(conn.linked(60))
        await asyncio.sleep(0.2)
        assert not waiting.done(), "it waits for the link, not for a timer"
        nats_server.start()
        await nats_server.wait_ready()
        assert await asyncio.wait_for(waiting, 60)
        assert conn.is_connected
    finally:
        await conn.close()
