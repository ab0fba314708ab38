"""A retried bootstrap: the agent that spent a connect token may ask again (its first answer lost) and is
answered again, with the same credential and a JWT for its own key; anyone else holding the spent token is
refused and writes nothing; after the token's expiry nobody is answered."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from datetime import datetime
from typing import Any

import nats.aio.client
from nats.errors import Error as NatsError

from schemas import subjects
from schemas.credentials import new_user_seed, public_key
from schemas.errors import Gone
from schemas.messages import AgentBootstrap, AgentCredentials, ClusterRecord, decode, encode
from services.bus.endpoints import remote_error
from tests.harness import wait_for
from tests.hostile.conftest import Hostile

BOOTSTRAP = subjects.Registry.AGENT_BOOTSTRAP


async def record_of(h: Hostile, cluster: str) -> tuple[ClusterRecord | None, int]:
    """The cluster's record (None: none) and the last sequence of the records' and UID claims' streams."""
    nc = await h.stack.nc()
    try:
        js = nc.jetstream()
        last = 0
        for bucket in (subjects.BUCKET_CLUSTERS, subjects.BUCKET_CLUSTER_UIDS):
            last += (await js.stream_info(f"KV_{bucket}")).state.last_seq
        kv = await js.key_value(subjects.BUCKET_CLUSTERS)
        try:
            entry = await kv.get(cluster)
        except NatsError:
            return None, last
        return (decode(entry.value, ClusterRecord) if entry.value else None), last
    finally:
        await nc.close()


async def ask(nc: nats.aio.client.Client, cluster: str, token: str, uid: str, key: str) -> AgentCredentials | Any:
    """A bootstrap request as an agent would send it: the credentials, or the error the registry answered."""
    req = AgentBootstrap(token=token, cluster_uid=uid, agent_version="hostile", user_public_key=key)
    msg = await nc.request(subjects.agent_call(BOOTSTRAP, cluster), encode(req), timeout=10)
    error = remote_error(msg.headers)
    return error if error is not None else decode(msg.data, AgentCredentials)


def jwt_subject(jwt: str) -> str:
    payload = jwt.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["sub"])


async def test_a_spent_token_is_answered_again_only_to_the_key_that_spent_it(hostile: Hostile) -> None:
    h = hostile
    record, before = await record_of(h, h.attacker)
    assert record is not None and record.state == "connected" and record.nats_user
    nc = await h.bootstrap_nc()
    # Another key (the token leaked after use): refused as a spent token, nothing written to anyone's record.
    stranger = public_key(new_user_seed())
    for uid in (record.cluster_uid, "another-uid"):
        answer = await ask(nc, h.attacker, h.spent_token, uid, stranger)
        assert isinstance(answer, Gone), answer
    # The same key but another cluster UID: refused too.
    answer = await ask(nc, h.attacker, h.spent_token, "another-uid", record.nats_user)
    assert isinstance(answer, Gone), answer
    assert await record_of(h, h.attacker) == (record, before)
    # The agent that spent it (its key, its cluster): answered again, with the credential it already holds and
    # a JWT for its own key (useless without that key's seed, which never left the agent); still nothing written.
    answer = await ask(nc, h.attacker, h.spent_token, record.cluster_uid, record.nats_user)
    assert isinstance(answer, AgentCredentials), answer
    assert answer.cluster == h.attacker and answer.credential == h.attacker_credential
    assert jwt_subject(answer.jwt) == record.nats_user
    assert await record_of(h, h.attacker) == (record, before)
    await h.intact()


async def test_an_agent_whose_bootstrap_answer_was_lost_still_comes_online(hostile: Hostile) -> None:
    """The agent's request is handled but its answer never arrives (here: sent with a reply subject nobody
    listens on, as after a dropped reply or an agent restarted before it came); the agent, started again with
    the same token and state directory, asks again with the key it kept and comes online."""
    from agent.identity.files import IdentityFiles

    h = hostile
    info = await h.stack.connect_cluster("lost")
    token, state, uid = str(info["token"]), h.tmp / "lost", "lost-uid"
    files = IdentityFiles(state)
    seed = new_user_seed()
    files.keep_pending_seed(seed)  # what the agent does before it sends its key
    nc = await h.bootstrap_nc(token)
    req = AgentBootstrap(token=token, cluster_uid=uid, agent_version="hostile", user_public_key=public_key(seed))
    await nc.publish(subjects.agent_call(BOOTSTRAP, "lost"), encode(req), reply="_INBOX_lost.nobody")
    await nc.flush()

    async def spent() -> bool:
        record, _ = await record_of(h, "lost")
        return record is not None and record.state == "connected"

    await wait_for(spent, timeout=15, what="the first bootstrap to spend the token")
    h.stack.agent(state, token, extra_env={"TETHER_SIM_CLUSTER_UID": uid}, name="agent-lost")
    await h.stack.wait_online("lost", timeout=30)
    assert files.load() is not None and files.pending_seed() is None
    record, _ = await record_of(h, "lost")
    assert record is not None and record.nats_user == public_key(seed)
    await h.intact()


async def test_a_retry_after_the_tokens_expiry_is_refused(hostile: Hostile) -> None:
    h = hostile
    info = await h.stack.connect_cluster("late", token_ttl=3)
    token, expires = str(info["token"]), datetime.fromisoformat(str(info["expires_at"])).timestamp()
    key = public_key(new_user_seed())
    nc = await h.bootstrap_nc(token)
    first = await ask(nc, "late", token, "late-uid", key)
    assert isinstance(first, AgentCredentials), first
    record, before = await record_of(h, "late")
    await wait_for(lambda: time.time() > expires + 0.5, timeout=10, what="the token's expiry")
    # The token's bootstrap user expires with it, so the broker refuses it first; should it still get through,
    # the registry refuses a retry of an expired token.

    async def retry() -> AgentCredentials | Any:
        again = await h.bootstrap_nc(token, connect_timeout=5, allow_reconnect=False)
        return await ask(again, "late", token, "late-uid", key)

    try:
        answer = await asyncio.wait_for(retry(), timeout=20)
    except (NatsError, OSError) as exc:  # OSError: TimeoutError too
        answer = exc
    assert not isinstance(answer, AgentCredentials), answer
    assert await record_of(h, "late") == (record, before)
    await h.intact()
