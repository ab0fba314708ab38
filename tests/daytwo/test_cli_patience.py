"""A read through the CLI while a service the API needs is away (lifecycle restarting; on a JetStream cluster, a
stream electing a leader): the API answers 503 with ``Retry-After``, the CLI says so and asks again, and prints
the answer once the service is back."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from asyncio.subprocess import PIPE
from pathlib import Path

from tests.harness import Stack, wait_for


async def test_a_list_waits_through_a_lifecycle_restart(stack: Stack, tmp_path: Path) -> None:
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    stack.services["lifecycle"].stop()
    env = dict(
        os.environ,
        TETHER_SERVER=stack.api,
        TETHER_TOKEN=stack.admin_token,
        TETHER_CONFIG=str(tmp_path / "config.json"),
    )
    stderr = tmp_path / "stderr"
    with stderr.open("w") as err:
        cli = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "services.cli", "tenant", "list", "-o", "json", env=env, stdout=PIPE, stderr=err
        )
        try:
            await wait_for(lambda: "asking again" in stderr.read_text(), timeout=30, what="the CLI told of the 503")
            assert cli.returncode is None  # still asking
            stack.services["lifecycle"] = stack.service("lifecycle").start()
            out, _ = await asyncio.wait_for(cli.communicate(), 60)
        finally:
            if cli.returncode is None:
                cli.kill()
                await cli.wait()
    assert cli.returncode == 0, stderr.read_text()
    assert json.loads(out) == []
    assert "try again" in stderr.read_text()
