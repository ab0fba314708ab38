"""NATS over TLS: agents verify the platform's CA; without it they refuse to connect."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.harness import Proc, Stack


async def test_agents_connect_over_tls_and_verify_the_server(tmp_path: Path) -> None:
    stack = Stack(tmp=tmp_path, tls=True)
    try:
        await stack.start()
        assert stack.nats_url.startswith("tls://")
        info = await stack.connect_cluster("c1")
        ca = str(tmp_path / "tls" / "ca.pem")
        assert info["agent_command"].endswith(f"--ca-file {ca}")
        # Without the CA the agent cannot verify the server and says how to fix it.
        blind = stack.agent(tmp_path / "blind", info["token"], name="blind", extra_env={"TETHER_LOG_LEVEL": "DEBUG"})
        assert await blind.wait_exit() == 2
        assert "cannot be verified" in blind.output() and "--ca-file" in blind.output()
        # With it (exactly the printed command) it connects.
        argv = [*info["agent_command"].split()[1:], "--driver", "sim", "--state-dir", str(tmp_path / "c1")]
        agent = Proc(
            name="tls-agent",
            argv=[sys.executable, "-m", "services.cli", *argv],
            env=stack.env(),
            log=tmp_path / "logs" / "tls-agent.log",
        ).start()
        stack.agents.append(agent)
        await stack.wait_online("c1")
        # The token was not spent by the refused attempt.
        assert (await stack.cluster("c1"))["state"] == "connected"
    finally:
        stack.stop()
