"""Findings 1 and the events credentials of issue 15, checked with the official ``nats`` CLI (v0.5.0).

- ``nats micro ls/info/stats`` list and describe all four services, and every ``$SRV.INFO`` reply passes
  ``nats schema validate io.nats.micro.v1.info_response`` (nats-py sent ``"description": null``).
- ``nats sub 'tether.events.>'`` live, and EVENTS replayed (``nats stream get``, a message-get loop), with
  the subscribe-only credentials from ``POST /api/v1/events/credentials``, which can do nothing else: not
  even create a consumer, whose deliver subject the broker would not check.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from schemas import subjects
from tests.clients.tools import run
from tests.harness import Stack, wait_for

pytestmark = pytest.mark.clients

SERVICES = ("registry", "access", "lifecycle", "health")


def cli(nats_cli: Path, stack: Stack, *args: str, creds: Path | None = None, **kw: Any) -> Any:
    argv = [nats_cli, "-s", stack.nats_url, "--creds", creds or stack.auth / "platform.creds", *args]
    return run(argv, **kw)


async def test_micro_services_as_the_nats_cli_sees_them(stack: Stack, nats_cli: Path, tmp_path: Path) -> None:
    listed = json.loads(cli(nats_cli, stack, "micro", "ls", "--json").stdout)
    names = {s["name"] for s in listed}
    assert {f"tether-{s}" for s in SERVICES} <= names, listed
    for service in SERVICES:
        info = json.loads(cli(nats_cli, stack, "micro", "info", f"tether-{service}", "--json").stdout)["info"]
        assert info["description"], info
        assert any(e["subject"].startswith(f"tether.svc.{service}.") for e in info["endpoints"]), info
        stats = cli(nats_cli, stack, "micro", "stats", f"tether-{service}").stdout
        assert f"tether-{service}" in stats

    # The raw $SRV.INFO replies, as every client receives them, against the official schema.
    nc = await stack.nc()
    try:
        for service in SERVICES:
            reply = await nc.request(f"$SRV.INFO.tether-{service}", b"", timeout=5)
            path = tmp_path / f"{service}-info.json"
            path.write_bytes(reply.data)
            checked = cli(
                nats_cli, stack, "schema", "validate", "io.nats.micro.v1.info_response", str(path), check=False
            )
            assert checked.returncode == 0, f"{service}: {reply.data!r}\n{checked.stdout}{checked.stderr}"
    finally:
        await nc.drain()


async def events_creds(stack: Stack, tmp_path: Path, name: str = "watcher") -> tuple[Path, str]:
    signed = await stack.ok("POST", "/api/v1/events/credentials", json={"name": name, "ttl_days": 1})
    path = tmp_path / f"{name}.creds"
    path.write_text(signed["creds"])
    assert signed["stream"] == subjects.EVENTS_STREAM and signed["subjects"] == "tether.events.>"
    return path, str(signed["inbox_prefix"])


async def test_nats_sub_with_subscribe_only_creds(stack: Stack, nats_cli: Path, tmp_path: Path) -> None:
    creds, inbox = await events_creds(stack, tmp_path)
    base = [nats_cli, "-s", stack.nats_url, "--creds", creds, "--inbox-prefix", inbox]

    # Live: events made while the CLI listens (one more each try, until it has printed one and quit).
    live = await asyncio.create_subprocess_exec(
        *map(str, [*base, "sub", "tether.events.cluster.>", "--count", "1", "--raw"]),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    made = [0]

    async def printed_one() -> bool:
        made[0] += 1
        await stack.connect_cluster(f"live-{made[0]}")
        try:
            await asyncio.wait_for(live.wait(), 0.5)
        except TimeoutError:
            return False
        return True

    try:
        await wait_for(printed_one, timeout=20, interval=0.1, what="nats sub to print a live cluster event")
        assert live.stdout is not None and live.stderr is not None
        out, err = await live.stdout.read(), await live.stderr.read()
        assert live.returncode == 0, err.decode()
        event = json.loads(out.decode().strip().splitlines()[0])
        assert event["type"] == "cluster-event.v1" and event["kind"] == "registered", out
    finally:
        if live.returncode is None:
            live.kill()
        await live.wait()

    # Replay: what EVENTS kept (one registered event per cluster made above), read message by message.
    for seq in range(1, made[0] + 1):
        got = run([*base, "stream", "get", subjects.EVENTS_STREAM, str(seq)])
        assert f'"cluster":"live-{seq}"' in got.stdout.replace(" ", ""), got.stdout
    nc = await nats.connect(stack.nats_url, user_credentials=str(creds), inbox_prefix=inbox.encode())
    try:
        assert [e["cluster"] for e in await replay(nc)] == [f"live-{i + 1}" for i in range(made[0])]
    finally:
        await nc.close()


async def replay(nc: nats.aio.client.Client, subject: str = "tether.events.>") -> list[dict[str, Any]]:
    """Every event EVENTS holds, in order: the next message matching ``subject`` from each sequence on
    (the README's replay loop, which needs no consumer)."""
    js = nc.jsm()
    events: list[dict[str, Any]] = []
    seq = 1
    while True:
        try:
            msg = await js.get_msg(subjects.EVENTS_STREAM, seq=seq, subject=subject, next=True)
        except nats.js.errors.NotFoundError:
            return events
        assert msg.data is not None and msg.seq is not None
        events.append(json.loads(msg.data))
        seq = msg.seq + 1


async def test_events_creds_can_do_nothing_else(stack: Stack, tmp_path: Path) -> None:
    # Made with the CLI this time: `tether events creds NAME -f FILE`.
    creds = tmp_path / "reader.creds"
    env = {**os.environ, "TETHER_SERVER": stack.api, "TETHER_TOKEN": stack.admin_token, "HOME": str(tmp_path)}
    made = subprocess.run(
        [sys.executable, "-m", "services.cli", "events", "creds", "reader", "--ttl-days", "1", "-f", str(creds)],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    assert made.returncode == 0, made.stderr
    assert creds.stat().st_mode & 0o777 == 0o600
    inbox = "_INBOX_events_reader"
    assert f"--inbox-prefix {inbox}" in made.stdout
    errors: list[Exception] = []

    async def on_error(exc: Exception) -> None:
        errors.append(exc)

    nc = await nats.connect(stack.nats_url, user_credentials=str(creds), inbox_prefix=inbox.encode(), error_cb=on_error)
    spy = await stack.nc()
    try:
        seen: list[str] = []

        async def on_any(msg: Any) -> None:
            seen.append(msg.subject)

        await spy.subscribe(">", cb=on_any)
        await spy.flush()
        # Publishing anywhere is refused, the events subjects included.
        for subject in ("tether.events.cluster.online", "tether.hb.c1", "tether.svc.registry.cluster.list"):
            await nc.publish(subject, b"{}")
        # Reading anything but the events is refused.
        for subject in ("tether.hb.>", "tether.evt.>", "_INBOX.>", "$JS.API.>", ">"):
            await nc.subscribe(subject)
        await nc.flush()
        await wait_for(lambda: len(errors) >= 8, timeout=10, what="a permissions violation for each attempt")
        text = " ".join(str(e) for e in errors).lower()
        assert text.count("permissions violation") >= 8, errors
        assert not [s for s in seen if s.startswith("tether.") and not s.startswith("tether.events.")], seen
        # The JetStream API: no other stream, no stream changes, no KV.
        js_refused = [
            "$JS.API.STREAM.INFO.EVT",
            "$JS.API.STREAM.PURGE.EVENTS",
            "$JS.API.STREAM.DELETE.EVENTS",
            "$JS.API.STREAM.MSG.DELETE.EVENTS",
            f"$JS.API.CONSUMER.CREATE.{subjects.EVT_STREAM}.x",
            f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.x",
            f"$JS.API.CONSUMER.CREATE.{subjects.EVENTS_STREAM}.x.tether.events.>",
            f"$JS.API.CONSUMER.DURABLE.CREATE.{subjects.EVENTS_STREAM}.x",
            "$JS.API.STREAM.INFO.KV_tether-clusters",
            "$JS.API.STREAM.NAMES",
        ]
        for subject in js_refused:
            with pytest.raises((NatsTimeout, nats.errors.NoRespondersError)):
                await nc.request(subject, b"", timeout=0.5)
        # ... while what a replaying reader needs answers.
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{subjects.EVENTS_STREAM}", b"", timeout=5)).data)
        assert info["config"]["name"] == subjects.EVENTS_STREAM, info
    finally:
        await nc.close()
        await spy.drain()
