"""An agent whose requests go unanswered on a link that says it is up makes the link again (issue 17).

In the 10,000-agent benchmark on a slow machine, 40 agents' connections carried no answer to their connect
request for 5.5 minutes, until the links dropped (which side held them is not known); on a new connection
each was answered at once. ``calls.call`` now connects again after ``RELINK_SILENCE`` of unanswered requests in
a row (here 1 s, with 0.5 s requests). Real nats-server, the agent's own connection; the service here stays
silent on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from nats.aio.client import Client
from nats.aio.msg import Msg

from agent.bus import Connection, connect
from agent.identity import calls
from agent.settings import AgentSettings
from schemas.messages import NameRequest, ResultRecorded, encode
from services.platform.natsd import NatsServer

SUBJECT = "test.relink"


@contextlib.asynccontextmanager
async def agent_link(server: NatsServer, tmp_path: Path, relinked: list[bool]) -> AsyncIterator[Connection]:
    """The agent's own connection; ``relinked`` gets an entry each time it is made again."""
    conn = await connect(
        AgentSettings(server=server.url, state_dir=tmp_path / "agent"),
        "relink-test",
        on_reconnected=lambda: relinked.append(True),
    )
    try:
        yield conn
    finally:
        await conn.close()


async def ask(conn: Connection) -> ResultRecorded:
    # Bounded: without the relink, asked until the server drops the link as stale (minutes).
    async with asyncio.timeout(30):
        return await calls.call(
            conn, "asking", SUBJECT, NameRequest(name="x"), ResultRecorded, timeout=0.5, relink_after=1.0
        )


async def test_unanswered_requests_in_a_row_make_the_link_again(
    nats_server: NatsServer, nc: Client, tmp_path: Path
) -> None:
    asked: list[int] = []  # how often the link had been made again when each request arrived
    relinked: list[bool] = []

    async def service(msg: Msg) -> None:
        # Silent until the link was made again: from the agent's side, a link that carries no answers.
        asked.append(len(relinked))
        if relinked:
            await msg.respond(encode(ResultRecorded(outcome="recorded")))

    await nc.subscribe(SUBJECT, cb=service)
    await nc.flush()
    async with agent_link(nats_server, tmp_path, relinked) as conn:
        answer = await ask(conn)
        assert answer.outcome == "recorded"
        assert asked[:2] == [0, 0], "two unanswered requests (1 s) on the first link"
        assert len(relinked) == 1 and asked[-1] == 1, "answered on the link made after them, made once"


async def test_answers_in_between_keep_the_link(nats_server: NatsServer, nc: Client, tmp_path: Path) -> None:
    count = 0
    relinked: list[bool] = []

    async def service(msg: Msg) -> None:
        # Unanswered, answered "busy", unanswered, then answered: never two unanswered in a row.
        nonlocal count
        count += 1
        if count == 2:
            await nc.publish(msg.reply, b"", headers={"Nats-Service-Error-Code": "503", "Nats-Service-Error": "busy"})
        elif count == 4:
            await msg.respond(encode(ResultRecorded(outcome="recorded")))

    await nc.subscribe(SUBJECT, cb=service)
    await nc.flush()
    async with agent_link(nats_server, tmp_path, relinked) as conn:
        answer = await ask(conn)
        assert answer.outcome == "recorded" and count == 4
        assert relinked == [], "an answer, even an error, shows the link carries answers"
