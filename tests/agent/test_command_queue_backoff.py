"""A reconnect ends the command queue's backoff (issue 17, restart): while NATS is down the backoff grows
(1 s doubling, up to 30 s), and pending commands waited it out long after the link was back."""

from __future__ import annotations

import asyncio

from agent.bus import CommandQueue, Connection


async def test_a_reconnect_ends_a_backoff_grown_over_an_outage() -> None:
    conn = Connection("never-connected")  # as while NATS is down: every next() backs off
    queue = CommandQueue(conn, "c1")
    loop = asyncio.get_running_loop()
    for _ in range(8):
        # Each wait cut short by a reconnect that did not last: the backoff keeps growing (to 15-30 s).
        waiting = asyncio.ensure_future(queue.next())
        await asyncio.sleep(0.05)
        assert not waiting.done()
        started = loop.time()
        queue.invalidate()
        assert await asyncio.wait_for(waiting, 2) is None
        assert loop.time() - started < 1.0
    await queue.close()
