"""A reconnect that stopped trying is started again by the agent's link watchdog (issue 17).

In a restart of 10,000 agents one agent's link stayed down for more than nine minutes: its socket open, its
subscriptions restored on the server, nothing published and no new attempt. The path inside nats-py that leaves a
client there is not known yet; the state is: the link is down and nats-py's reconnect task no longer tries. Here
that state is made directly (the reconnect task is cancelled while the server is down), against a real
nats-server and the agent's own connection, and the watchdog must bring the link back once the server is up.
"""

from __future__ import annotations

from pathlib import Path

from agent.bus import connect
from agent.bus.client import PatchedClient
from agent.bus.watchdog import WatchdogTimes
from agent.settings import AgentSettings
from services.platform.natsd import NatsServer
from tests.harness import wait_for


async def test_a_reconnect_that_stopped_trying_is_started_again_and_the_link_comes_back(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    await nats_server.wait_ready()
    conn = await connect(AgentSettings(server=nats_server.url, state_dir=tmp_path / "agent"), "watchdog-test")
    conn.watchdog.times = WatchdogTimes(check_every=0.2, stuck_after=1.0)
    try:
        nc = conn.client
        assert isinstance(nc, PatchedClient)
        nats_server.stop()
        await wait_for(lambda: nc.is_reconnecting, what="nats-py to start reconnecting", timeout=20)

        # The fault: nats-py's reconnect gives up without a word (status still "reconnecting").
        stuck = nc._reconnection_task
        assert stuck is not None
        stuck.cancel()
        await wait_for(stuck.done, what="the reconnect task to end", timeout=5)
        assert nc.is_reconnecting and not conn.is_connected

        nats_server.start()
        await nats_server.wait_ready()
        await wait_for(lambda: conn.is_connected, what="the link back, by the watchdog", timeout=30)
        assert conn.watchdog.restarts >= 1
        assert await conn.linked(0.1), "the reconnect hooks ran: the agent's parts see the link up"

        # A link that is up again is not watched: the watchdog's task ends.
        await wait_for(lambda: conn.watchdog.watching is False, what="the watchdog to stop watching", timeout=5)
    finally:
        await conn.close()
