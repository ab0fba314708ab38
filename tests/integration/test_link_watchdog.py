"""A reconnect that stopped trying is started again by the agent's link watchdog, and ends a service (issue 17).

In a restart of 10,000 agents one agent's link stayed down for more than nine minutes: its socket open, its
subscriptions restored on the server, nothing published and no new attempt. The path inside nats-py that leaves a
client there is not known yet; the state is: the link is down and nats-py's reconnect task no longer tries. Here
that state is made directly (the reconnect task is cancelled while the server is down), against a real
nats-server and the agent's own connection, and the watchdog must bring the link back once the server is up. A
service in that state is alive and deaf: it must end (``running.connection_lost``) so that its supervisor restarts
it.
"""

from __future__ import annotations

from pathlib import Path

from agent.bus import connect
from agent.bus.client import PatchedClient
from agent.bus.watchdog import WatchdogTimes
from agent.settings import AgentSettings
from services.bus import connection, running
from services.bus.settings import BusSettings
from services.bus.watchdog import WatchdogTimes as ServiceWatchdogTimes
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


async def test_a_service_whose_reconnect_stopped_trying_ends_so_that_it_is_restarted(nats_server: NatsServer) -> None:
    await nats_server.wait_ready()
    times = ServiceWatchdogTimes(check_every=0.2, stuck_after=1.0)
    nc = await connection.connect(BusSettings(url=nats_server.url), "watchdog-service", times)
    try:
        nats_server.stop()
        await wait_for(lambda: nc.is_reconnecting, what="nats-py to start reconnecting", timeout=20)
        assert "watchdog-service" not in running._lost, "an outage alone is not the fault"
        stuck = nc._reconnection_task
        assert stuck is not None
        stuck.cancel()
        await wait_for(lambda: "watchdog-service" in running._lost, what="the service to end itself", timeout=10)
    finally:
        while "watchdog-service" in running._lost:
            running._lost.remove("watchdog-service")
        await connection.close(nc, timeout=1)
