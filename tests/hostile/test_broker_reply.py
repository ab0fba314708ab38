"""Reply-subject reflection: an agent (or a spent token's bootstrap user) asks a platform endpoint it may call
and points the reply at a subject of its choice. The platform answers only into the caller's own inbox."""

from __future__ import annotations

import json
from typing import Any

from schemas import subjects
from schemas.credentials import agent_inbox_prefix
from services.bus.endpoints import ERROR_CODE
from tests.harness import wait_for
from tests.hostile.conftest import Hostile

HELLO = subjects.Registry.AGENT_HELLO
RENEW = subjects.Registry.AGENT_RENEW
BOOTSTRAP = subjects.Registry.AGENT_BOOTSTRAP
RESULT = subjects.Lifecycle.AGENT_RESULT


def targets(h: Hostile) -> list[str]:
    """Reply subjects an attacker would like the platform's own user to publish on."""
    victim_stream, victim_consumer = subjects.desired_stream(h.victim), subjects.agent_consumer(h.victim)
    return [
        f"$JS.API.STREAM.DELETE.{subjects.AUDIT_STREAM}",
        f"$JS.API.STREAM.PURGE.KV_{subjects.BUCKET_TOKENS}",
        f"$JS.API.STREAM.PURGE.{victim_stream}",
        f"$JS.API.CONSUMER.DELETE.{victim_stream}.{victim_consumer}",
        # The registry may make agents' consumers: the victim's re-filtered onto the attacker's records.
        f"$JS.API.CONSUMER.CREATE.{victim_stream}.{victim_consumer}.{subjects.desired_records(h.attacker)}",
        f"$KV.{subjects.BUCKET_TOKENS}.forged",
        # Lifecycle writes the victim's bucket and the workload names, and may delete the retired bucket.
        f"{subjects.desired_prefix(h.victim)}{h.victim}.space.p1.before",
        f"$KV.{subjects.BUCKET_WORKLOAD_NAMES}.space.p1.before",
        f"$JS.API.STREAM.DELETE.KV_{subjects.RETIRED_DESIRED_BUCKET}",
        f"_INBOX_{h.victim}.stolen",
        "_INBOX.platform-looking",
        f"{h.attacker_inbox}",  # the bare prefix, no token after it
        f"{h.attacker_inbox}.*",
    ]


async def drops(h: Hostile, reply: str, before: int, service: str = "registry") -> None:
    proc = h.stack.services[service]
    await wait_for(
        lambda: proc.output().count("dropped a request") > before,
        timeout=5,
        what=f"the {service} to drop a request answering to {reply}",
    )
    assert repr(reply) in proc.output()


async def test_agent_endpoints_never_answer_outside_the_callers_inbox(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    hello = json.dumps(
        {"type": "agent-hello.v1", "cluster": h.attacker, "credential": "tac.evil.wrong", "cluster_uid": "x"}
    ).encode()
    renew = json.dumps({"type": "agent-renew.v1", "cluster": h.attacker, "credential": "wrong"}).encode()
    for base, body in ((HELLO, hello), (RENEW, renew), (HELLO, b""), (RENEW, b"{not json")):
        for reply in targets(h):
            before = h.stack.services["registry"].output().count("dropped a request")
            await nc.publish(subjects.agent_call(base, h.attacker), body, reply=reply)
            await nc.flush()
            await drops(h, reply, before)
    # Lifecycle's endpoint for results, the same way.
    result = json.dumps(
        {"type": "command-result.v1", "op_id": "x", "cluster": h.attacker, "kind": "space", "project": "p1"}
        | {"name": "nothing", "generation": 1, "ok": True}
    ).encode()
    lifecycle = h.stack.services["lifecycle"]
    for body in (result, b"{not json"):
        for reply in targets(h):
            before = lifecycle.output().count("dropped a request")
            await nc.publish(subjects.agent_call(RESULT, h.attacker), body, reply=reply)
            await nc.flush()
            await drops(h, reply, before, "lifecycle")
    await h.intact()
    await h.legit_command_applies()


async def test_a_spent_tokens_bootstrap_user_cannot_reflect_either(hostile: Hostile) -> None:
    h = hostile
    nc = await h.bootstrap_nc()
    body = json.dumps({"type": "agent-bootstrap.v1", "token": h.spent_token, "cluster_uid": "x"}).encode()
    for reply in targets(h):
        before = h.stack.services["registry"].output().count("dropped a request")
        await nc.publish(subjects.agent_call(BOOTSTRAP, h.attacker), body, reply=reply)
        await nc.flush()
        await drops(h, reply, before)
    await h.intact()
    await h.legit_command_applies()


async def test_an_agent_may_call_only_its_own_clusters_endpoints(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    for base in (HELLO, RENEW, BOOTSTRAP, RESULT):
        before = len(h.errors)
        await nc.publish(subjects.agent_call(base, h.victim), b"{}", reply=f"{h.attacker_inbox}.x")
        await nc.flush()
        await h.refused(f"a call to {base} as {h.victim}", before)
    # The cluster-less subjects of earlier versions are not open to agents either, nor the EVT results subject.
    for base in (HELLO, RENEW, BOOTSTRAP, RESULT, subjects.evt(h.attacker, "result")):
        before = len(h.errors)
        await nc.publish(base, b"{}", reply=f"{h.attacker_inbox}.x")
        await nc.flush()
        await h.refused(f"a call to {base}", before)
    await h.intact()


async def test_an_agent_may_neither_act_for_a_user_nor_end_the_apis_sessions(hostile: Hostile) -> None:
    """A user's actions (``Lifecycle.ACTION``, ``ACTION_OWN``) and the API replicas' notices are the platform's."""
    h = hostile
    nc = await h.attacker_nc()
    attempts = {
        "an action as a platform caller": (subjects.Lifecycle.ACTION, b"{}"),
        "an action on one's own records": (subjects.Lifecycle.ACTION_OWN, b"{}"),
        "a notice that sessions ended": (subjects.API_SESSIONS_ENDED, b"{}"),
    }
    await h.all_refused(nc, attempts)
    before = len(h.errors)
    await nc.subscribe(subjects.API_SESSIONS_ENDED)
    await nc.flush()
    await h.refused("a subscription to the API's notices", before)
    await h.intact()


async def test_speaking_for_another_cluster_from_ones_own_subject_is_refused(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    victim = json.loads((h.tmp / h.victim / "credentials.json").read_text())
    # Even with the victim's credential (stolen), the attacker's subject speaks only for the attacker.
    body = json.dumps(
        {"type": "agent-hello.v1", "cluster": h.victim, "credential": victim["credential"], "cluster_uid": "x"}
    ).encode()
    reply = await nc.request(subjects.agent_call(HELLO, h.attacker), body, timeout=5)
    assert reply.headers and reply.headers[ERROR_CODE] == "403", reply.headers
    await h.intact()


async def test_error_replies_are_never_empty(hostile: Hostile) -> None:
    h = hostile
    nc = await h.attacker_nc()
    for body in (b"", b"{oops", json.dumps({"type": "agent-renew.v1", "cluster": h.attacker}).encode()):
        reply = await nc.request(subjects.agent_call(RENEW, h.attacker), body, timeout=5)
        assert reply.headers and reply.headers[ERROR_CODE] in ("400", "401"), reply.headers
        error = json.loads(reply.data)["error"]
        assert error["code"] == reply.headers[ERROR_CODE] and error["description"]
    platform = await h.stack.nc()
    try:
        reply = await platform.request(subjects.Registry.CLUSTER_GET, b"{}", timeout=5)
        assert reply.data and json.loads(reply.data)["error"]["code"] == "400"
    finally:
        await platform.close()


async def test_a_request_naming_another_agents_inbox_delivers_nothing_to_that_agent(hostile: Hostile) -> None:
    """The victim listens on its whole inbox with its own real credentials while the attacker (its agent's real
    creds, and its spent token's bootstrap user) asks every agent endpoint, with bodies that would be answered,
    to reply into the victim's inbox. The cluster in the subject is the one the broker authenticated, so the
    registry answers only into that cluster's inbox and drops the rest: the victim receives nothing."""
    h = hostile
    victim = await h.stack.nc_as_agent_of(h.victim, h.tmp / h.victim)
    stolen: list[str] = []

    async def listen(msg: Any) -> None:
        stolen.append(f"{msg.subject}: {msg.data[:200]!r}")

    try:
        # The victim's own agent uses its inbox too (its requests are answered there): listen only below a prefix
        # the attack names, so a reply to the real agent is not counted as stolen.
        inbox = f"{agent_inbox_prefix(h.victim)}.stolen"
        await victim.subscribe(f"{inbox}.>", cb=listen)
        await victim.subscribe(inbox, cb=listen)
        await victim.flush()
        attacker, bootstrap = await h.attacker_nc(), await h.bootstrap_nc()
        hello = {
            "type": "agent-hello.v1",
            "cluster": h.attacker,
            "credential": h.attacker_credential,
            "cluster_uid": "x",
        }
        renew = {"type": "agent-renew.v1", "cluster": h.attacker, "credential": h.attacker_credential}
        spent = {"type": "agent-bootstrap.v1", "token": h.spent_token, "cluster_uid": "x"}
        # Answered when asked properly: the registry is serving these very requests.
        answer = await attacker.request(subjects.agent_call(RENEW, h.attacker), json.dumps(renew).encode(), timeout=5)
        assert not (answer.headers or {}).get(ERROR_CODE), answer.headers
        attempts = [
            (attacker, HELLO, hello),
            (attacker, RENEW, renew),
            (attacker, HELLO, {}),
            (bootstrap, BOOTSTRAP, spent),
        ]
        for nc, base, body in attempts:
            for reply in (inbox, f"{inbox}.x", f"{inbox}.AbCdEf0123456789.1"):
                before = h.stack.services["registry"].output().count("dropped a request")
                await nc.publish(subjects.agent_call(base, h.attacker), json.dumps(body).encode(), reply=reply)
                await nc.flush()
                await drops(h, reply, before)
        # Anything the registry had sent would be in the victim's socket by now: one round trip through the server.
        await victim.flush()
        assert stolen == [], stolen
    finally:
        await victim.close()
    await h.intact()
