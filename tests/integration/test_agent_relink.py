"""An agent whose requests go unanswered on a link that says it is up makes the link again (issue 17).

In the 10,000-agent benchmark on a slow machine, 40 agents' connections carried no answer to their connect
request for 5.5 minutes, until nats-server dropped them as stale; on a new connection each was answered at
once. ``calls.call`` now connects again after ``RELINK_AFTER`` unanswered requests in a row. Real
nats-server, the agent's own connection; the service here stays silent on purpose.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg

from agent.bus import connect
from agent.identity import calls
from agent.settings import AgentSettings
from schemas.messages import NameRequest, ResultRecorded, encode
from services.platform.natsd import NatsServer

SUBJECT = "test.relink"


async def test_unanswered_requests_in_a_row_make_the_link_again(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    asked: list[int] = []  # the reconnect count each request arrived under

    async def service(msg: Msg) -> None:
        # Silent until the link was made again: from the agent's side, a link that carries no answers.
        asked.append(len(relinked))
        if relinked:
            await msg.respond(encode(ResultRecorded(outcome="recorded")))

    relinked: list[bool] = []
    await nc.subscribe(SUBJECT, cb=service)
    await nc.flush()
    conn = await connect(
        AgentSettings(server=nats_server.url, state_dir=tmp_path / "agent"),
        "relink-test",
        on_reconnected=lambda: relinked.append(True),
    )
    try:
        async with asyncio.timeout(30):  # without the relink: asked until the server drops the link (minutes)
            answer = await calls.call(conn, "asking", SUBJECT, NameRequest(name="x"), ResultRecorded, timeout=0.5)
        assert answer.outcome == "recorded"
        assert asked[: calls.RELINK_AFTER] == [0] * calls.RELINK_AFTER, "asked on the first link until then"
        assert len(relinked) == 1 and asked[-1] == 1, "answered on the link made after them, made once"
    finally:
        await conn.close()


async def test_answers_in_between_keep_the_link(nats_server: NatsServer, nc: Client, tmp_path: Path) -> None:
    count = 0

    async def service(msg: Msg) -> None:
        # Unanswered, answered "busy", unanswered, then answered: never two unanswered in a row.
        nonlocal count
        count += 1
        if count == 2:
            await nc.publish(msg.reply, b"", headers={"Nats-Service-Error-Code": "503", "Nats-Service-Error": "busy"})
        elif count == 4:
            await msg.respond(encode(ResultRecorded(outcome="recorded")))

    relinked: list[bool] = []
    await nc.subscribe(SUBJECT, cb=service)
    await nc.flush()
    conn = await connect(
        AgentSettings(server=nats_server.url, state_dir=tmp_path / "agent"),
        "relink-test",
        on_reconnected=lambda: relinked.append(True),
    )
    try:
        async with asyncio.timeout(30):
            answer = await calls.call(conn, "asking", SUBJECT, NameRequest(name="x"), ResultRecorded, timeout=0.5)
        assert answer.outcome == "recorded" and count == 4
        assert relinked == [], "an answer, even an error, shows the link carries answers"
    finally:
        await conn.close()
