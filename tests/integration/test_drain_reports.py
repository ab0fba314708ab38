"""A drain cut short is not reported as an error (nats-io/nats.py#469).

nats-py's ``drain()`` gathers one task per subscription; cut short (the server stops answering, the close's
deadline passes, and the server does not come back), that gathering future ends cancelled, nobody retrieves
it, and asyncio's default handler logs "_GatheringFuture exception was never retrieved" at ERROR with a
traceback: in every service stopped beside a stopping NATS. The loops of the services and the agent report
such cancellations at DEBUG (``schemas.loop_reports``); any other unretrieved error is still an ERROR.

Each case runs as a process of its own (``python -m tests.integration.test_drain_reports <loop> <url>``),
like a service: its log is what an operator reads, and no test's log capture keeps the drain's frames alive.
Real nats-server, the services' own ``close``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable

import nats
import pytest

from agent.cli import new_event_loop as agent_loop
from schemas import loop_reports
from services.bus.connection import close
from services.bus.running import new_event_loop as service_loop
from services.platform.natsd import NatsServer

NEVER_RETRIEVED = "never retrieved"
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "service": service_loop,
    "agent": agent_loop,
}


async def drain_cut_short(url: str) -> None:
    """Connect, subscribe with messages in hand, let the parent freeze the server, close with a short
    deadline, and let the parent kill the server (a platform that is stopping)."""
    nc = await nats.connect(url, max_reconnect_attempts=-1, reconnect_time_wait=0.2)

    async def slow(_msg: object) -> None:
        await asyncio.sleep(0.01)

    for i in range(5):
        await nc.subscribe(f"drain.{i}", cb=slow)
    for i in range(200):
        await nc.publish(f"drain.{i % 5}", b"x")
    await nc.flush()
    print("subscribed", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # frozen
    await close(nc, timeout=1.0)
    print("closed", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)  # killed


def child(loop: str, url: str) -> None:
    logging.basicConfig(level=logging.DEBUG, format="%(levelname)s %(name)s: %(message)s")
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(drain_cut_short(url))
    gc.collect()


async def run_child(loop: str, server: NatsServer) -> str:
    """The child's log, the server frozen during its close and killed after it."""
    await server.wait_ready()
    assert server.proc is not None
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.test_drain_reports",
        loop,
        server.url,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        lines: list[str] = []
        for expected in ("subscribed", "closed"):
            while (line := (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()) and line.strip() != expected:
                lines.append(line)
            assert line, f"the child ended before it {expected}: {''.join(lines)}"
            if expected == "subscribed":
                os.kill(server.proc.pid, signal.SIGSTOP)
            else:
                server.kill_now()
            proc.stdin.write(b"\n")
            await proc.stdin.drain()
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
        return "".join(lines) + rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_a_drain_cut_short_is_an_error_to_asyncio_by_default(nats_server: NatsServer) -> None:
    """The control: with asyncio's own handler the cut-short drain is an ERROR (what the loops' handler is
    for)."""
    log = await run_child("asyncio", nats_server)
    assert "drain did not finish" in log
    assert f"ERROR asyncio: _GatheringFuture exception was {NEVER_RETRIEVED}" in log, (
        "nats-py no longer leaves its drain's gathering future unretrieved (nats-io/nats.py#469 fixed?): "
        f"schemas.loop_reports may have no reason left to exist\n{log}"
    )


@pytest.mark.parametrize("loop", ["service", "agent"])
async def test_the_loops_report_a_drain_cut_short_at_debug_only(nats_server: NatsServer, loop: str) -> None:
    log = await run_child(loop, nats_server)
    assert "drain did not finish" in log
    assert f"DEBUG {loop_reports.__name__}: _GatheringFuture exception was {NEVER_RETRIEVED}" in log, log
    assert "ERROR" not in log, log


def test_other_unretrieved_errors_are_still_errors(caplog: pytest.LogCaptureFixture) -> None:
    for make in (service_loop, agent_loop):
        loop = make()
        try:
            assert loop.get_exception_handler() is loop_reports.report
            future: asyncio.Future[None] = loop.create_future()
            future.set_exception(ValueError("a real failure"))
            del future
            gc.collect()
        finally:
            loop.close()
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR and "a real failure" in r.getMessage()]
    assert len(failures) == 2


if __name__ == "__main__":
    child(*sys.argv[1:3])
