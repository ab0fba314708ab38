"""The agent's link PINGs its server seldom (real nats-server): an idle agent's messages are its heartbeats,
not PINGs besides them, and a silently dead link is still found within a minute."""

from __future__ import annotations

from pathlib import Path

from agent.bus.dial import Dialer
from agent.bus.events import LinkEvents
from agent.settings import AgentSettings
from services.platform.natsd import NatsServer

HEARTBEAT_INTERVAL = 5.0
"""The platform's default heartbeat interval (the welcome's)."""


async def test_an_idle_link_pings_every_15_s_and_finds_a_dead_link_within_a_minute(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    await nats_server.wait_ready()
    settings = AgentSettings(server=nats_server.url, state_dir=tmp_path)
    nc = await Dialer(settings, LinkEvents("agent-test"), None, None).dial()
    try:
        assert nc.is_connected
        ping, unanswered = nc.options["ping_interval"], nc.options["max_outstanding_pings"]
        # Every 5 s doubled each idle agent's messages (10,000 agents: 2,000 PINGs and PONGs a second).
        assert ping >= 3 * HEARTBEAT_INTERVAL
        # The link is given up after `unanswered` PINGs without a PONG, and the next one: a dead link is
        # redialled within a minute (whether the cluster shows offline is health's, within 15 s).
        assert ping * (unanswered + 1) <= 60
    finally:
        await nc.close()
