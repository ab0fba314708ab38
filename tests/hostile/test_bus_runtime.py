"""The bus runtime's own guards, against a real nats-server: a poison message is terminated after a bounded
number of deliveries (with a log line and an event) and never blocks the ones after it; a service whose NATS
connection is closed for good exits non-zero; an oversized publish is refused before it reaches the server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import textwrap
from pathlib import Path

import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import StreamConfig

from schemas import subjects
from schemas.errors import InvalidInput
from services.bus.consuming import MAX_DELIVER, consume
from services.bus.limits import GuardedClient, PayloadTooLarge
from services.bus.running import EXIT_BUS_LOST
from services.platform.natsd import NatsServer
from tests.harness import Proc, wait_for

pytestmark = pytest.mark.hostile


async def test_a_poison_message_is_terminated_after_bounded_deliveries(nc: Client) -> None:
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name="T", subjects=["t.>"]))
    await js.add_stream(StreamConfig(name="EV", subjects=[subjects.PUBLIC_EVENTS_ANY]))
    attempts: dict[str, int] = {}
    handled: list[str] = []

    async def handler(msg: Msg) -> None:
        body = msg.data.decode()
        attempts[body] = attempts.get(body, 0) + 1
        if body == "poison":
            raise RuntimeError("this one always fails")
        if body == "bad":
            raise InvalidInput("can never be handled")
        handled.append(body)

    for body in (b"poison", b"bad", b"ok-1"):
        await js.publish("t.same", body)
    task = asyncio.create_task(
        consume(js, stream="T", durable="d", filter_subject="t.>", handler=handler, batch=4, retry_base=0.02)
    )
    try:
        await wait_for(lambda: attempts.get("poison", 0) >= MAX_DELIVER, timeout=20, what="the poison redelivered")
        await js.publish("t.same", b"ok-2")
        await wait_for(lambda: handled == ["ok-1", "ok-2"], timeout=10, what="later messages handled")
        # Terminated, not redelivered again: the count stays put.
        await asyncio.sleep(0.5)
        assert attempts["poison"] == MAX_DELIVER and attempts["bad"] == 1
        info = await js.consumer_info("T", "d")
        assert info.num_ack_pending == 0 and info.num_pending == 0
        sub = await js.pull_subscribe(subjects.MESSAGE_DROPPED, stream="EV")
        events = sorted((json.loads(m.data) for m in await sub.fetch(2, timeout=5)), key=lambda e: e["deliveries"])
        assert [(e["deliveries"], e["subject"]) for e in events] == [(1, "t.same"), (MAX_DELIVER, "t.same")]
        assert "can never be handled" in events[0]["reason"] and "always fails" in events[1]["reason"]
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_an_oversized_publish_is_refused_in_the_process(nats_server: NatsServer) -> None:
    await nats_server.wait_ready()
    nc = GuardedClient()
    await nc.connect(nats_server.url)
    try:
        with pytest.raises(PayloadTooLarge):
            await nc.publish("x", b"x" * (nc.max_payload - 10), headers={"Nats-Msg-Id": "y" * 100})
        with pytest.raises(PayloadTooLarge):
            await nc.jetstream().publish("x", b"x" * (nc.max_payload + 1))
        await nc.publish("x", b"small")
        await nc.flush()
        assert nc.is_connected
    finally:
        nc.closing = True
        await nc.close()


SERVICE = textwrap.dedent(
    """
    import asyncio, sys
    from nats.aio.client import Client
    from services.bus.connection import connect
    from services.bus.running import run_main
    from services.bus.settings import BusSettings

    async def main() -> None:
        nc = await connect(BusSettings(url=sys.argv[1]), "doomed")
        print("connected", flush=True)
        # What the guard prevents: a publish over the server's max payload (payload + headers). The server
        # closes the connection and nats-py does not reconnect.
        await Client.publish(nc, "x", b"x" * (nc.max_payload - 100), headers={"H": "h" * 1000})
        await asyncio.Event().wait()

    run_main(main())
    """
)


async def test_a_service_whose_connection_is_closed_for_good_exits_non_zero(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    await nats_server.wait_ready()
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    proc = Proc("doomed", [sys.executable, str(script), nats_server.url], dict(os.environ), tmp_path / "doomed.log")
    proc.start()
    try:
        code = await proc.wait_exit(timeout=20)
        assert code == EXIT_BUS_LOST, proc.output()
        assert "closed the connection for good" in proc.output()
    finally:
        proc.stop()
