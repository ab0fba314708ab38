from __future__ import annotations

import msgspec
import pytest

from schemas.errors import Conflict, Gone, InvalidInput, Unauthenticated
from schemas.messages import AGENT_PROTOCOL, AgentBootstrap, AgentHello, ClusterCreate
from services.registry import logic

NOW = 1_000_000.0
KEY = bytes(range(32))
USER = "U" + "A" * 55


def registered(name: str = "edge-1", ttl: float = 3600.0):  # type: ignore[no-untyped-def]
    return logic.register(ClusterCreate(name=name, labels={"env": "dev"}, token_ttl=ttl), None, NOW)


def test_register_stores_only_a_hash_of_the_token() -> None:
    record, token = registered()
    assert token.startswith("tct.edge-1.")
    assert token not in record.token_hash
    assert record.token_hash == logic.hash_secret(token)
    assert record.state == "pending"
    assert record.token_expires_at == NOW + 3600


@pytest.mark.parametrize("name", ["Edge", "edge_1", "-edge", "edge-", "", "a" * 64, "a.b"])
def test_register_refuses_names_that_are_not_dns_labels(name: str) -> None:
    with pytest.raises(InvalidInput, match="invalid cluster name"):
        logic.register(ClusterCreate(name=name), None, NOW)


def test_register_refuses_bad_labels() -> None:
    with pytest.raises(InvalidInput, match="label"):
        logic.register(ClusterCreate(name="ok", labels={"bad key!": "x"}), None, NOW)


def test_redeem_spends_the_token_and_issues_a_credential() -> None:
    record, token = registered()
    connected, credential = logic.redeem(record, AgentBootstrap(token=token, cluster_uid="uid-1"), NOW + 1, KEY)
    assert connected.state == "connected"
    assert connected.token_hash == ""
    assert connected.cluster_uid == "uid-1"
    assert connected.credential_hash == logic.hash_secret(credential)
    with pytest.raises(Gone, match="already used"):
        logic.redeem(connected, AgentBootstrap(token=token, cluster_uid="uid-1"), NOW + 2, KEY)
    assert connected.spent_token_hash == record.token_hash and connected.token_expires_at == record.token_expires_at


def test_a_retried_bootstrap_is_answered_again_only_for_the_same_key_uid_and_until_expiry() -> None:
    record, token = registered(ttl=60)
    first = AgentBootstrap(token=token, cluster_uid="uid-1", user_public_key=USER)
    connected, credential = logic.redeem(record, first, NOW, KEY)
    # the same agent asking again: the same credential, nothing to write
    assert logic.redeem_again(connected, first, NOW + 30, KEY) == (None, credential)
    other_key = AgentBootstrap(token=token, cluster_uid="uid-1", user_public_key="U" + "B" * 55)
    other_uid = AgentBootstrap(token=token, cluster_uid="uid-2", user_public_key=USER)
    wrong_token = AgentBootstrap(token=token + "x", cluster_uid="uid-1", user_public_key=USER)
    for req in (other_key, other_uid, wrong_token):
        with pytest.raises(Gone, match="already used"):
            logic.redeem_again(connected, req, NOW + 1, KEY)
    with pytest.raises(Gone, match="already used"):
        logic.redeem_again(connected, first, NOW + 61, KEY)
    with pytest.raises(Gone):
        logic.redeem_again(logic.disconnect(connected, NOW + 2), first, NOW + 3, KEY)
    # a registry whose key changed (an open NATS restarted) answers with a new credential and writes its hash
    changed, again = logic.redeem_again(connected, first, NOW + 1, bytes(32))
    assert changed is not None and again != credential and changed.credential_hash == logic.hash_secret(again)


def test_an_agent_without_a_key_is_never_answered_again() -> None:
    record, token = registered()
    req = AgentBootstrap(token=token, cluster_uid="u")
    connected, _ = logic.redeem(record, req, NOW, KEY)
    with pytest.raises(Gone):
        logic.redeem_again(connected, req, NOW + 1, KEY)


def test_credentials_are_derived_with_the_key_and_need_a_long_one() -> None:
    one = logic.agent_credential(KEY, "c", "h", USER)
    assert one == logic.agent_credential(KEY, "c", "h", USER) and one.startswith("tac.c.") and len(one) == 49
    assert one != logic.agent_credential(bytes(32), "c", "h", USER) != logic.agent_credential(KEY, "c", "h2", USER)
    with pytest.raises(ValueError, match="at least 32"):
        logic.agent_credential(b"short", "c", "h", USER)


def test_redeem_refuses_a_wrong_or_expired_token() -> None:
    record, token = registered(ttl=60)
    with pytest.raises(Unauthenticated, match="wrong connect token"):
        logic.redeem(record, AgentBootstrap(token=token + "x", cluster_uid="u"), NOW, KEY)
    with pytest.raises(Gone, match="expired"):
        logic.redeem(record, AgentBootstrap(token=token, cluster_uid="u"), NOW + 61, KEY)


def test_redeem_refuses_a_malformed_uid() -> None:
    record, token = registered()
    with pytest.raises(InvalidInput, match="cluster UID"):
        logic.redeem(record, AgentBootstrap(token=token, cluster_uid="has spaces"), NOW, KEY)


def test_connecting_a_connected_cluster_again_is_a_conflict() -> None:
    record, token = registered()
    connected, _ = logic.redeem(record, AgentBootstrap(token=token, cluster_uid="u"), NOW, KEY)
    with pytest.raises(Conflict, match="already connected"):
        logic.register(ClusterCreate(name="edge-1"), connected, NOW)
    # a disconnected one is connected again only with rotate_token (a clear 409 otherwise), keeping its labels
    with pytest.raises(Conflict, match="--rotate-token"):
        logic.register(ClusterCreate(name="edge-1"), logic.disconnect(connected, NOW), NOW)
    with pytest.raises(Conflict, match="--rotate-token"):
        logic.register(ClusterCreate(name="edge-1"), record, NOW)
    rotate = ClusterCreate(name="edge-1", rotate_token=True)
    again, new_token = logic.register(rotate, logic.disconnect(connected, NOW), NOW)
    assert again.state == "pending" and new_token != token and again.labels == {"env": "dev"}


def test_admit_checks_credential_state_and_uid() -> None:
    record, token = registered()
    connected, credential = logic.redeem(record, AgentBootstrap(token=token, cluster_uid="u"), NOW, KEY)
    hello = AgentHello(
        cluster="edge-1", credential=credential, cluster_uid="u", agent_version="9", protocol=AGENT_PROTOCOL
    )
    assert logic.admit(connected, hello).agent_version == "9"
    with pytest.raises(Unauthenticated, match="invalid agent credential"):
        logic.admit(connected, AgentHello(cluster="edge-1", credential="tac.edge-1.nope", cluster_uid="u"))
    with pytest.raises(Conflict, match="different cluster"):
        logic.admit(connected, AgentHello(cluster="edge-1", credential=credential, cluster_uid="other"))
    with pytest.raises(Unauthenticated, match="disconnected"):
        logic.admit(logic.disconnect(connected, NOW), hello)


def test_an_agent_still_on_a_cmd_stream_is_told_to_upgrade() -> None:
    record, token = registered()
    connected, credential = logic.redeem(record, AgentBootstrap(token=token, cluster_uid="u"), NOW, KEY)
    # An agent older than the protocol field sends none: it waits on a CMD_* consumer that no longer exists.
    old = AgentHello(cluster="edge-1", credential=credential, cluster_uid="u", agent_version="0.1.0")
    assert old.protocol == 1
    with pytest.raises(Gone, match=r"agent 0\.1\.0 takes its commands from a CMD_\* stream .* upgrade the agent"):
        logic.admit(connected, old)
    # Credentials are checked first: a stranger learns nothing about protocols.
    with pytest.raises(Unauthenticated):
        logic.admit(connected, AgentHello(cluster="edge-1", credential="tac.edge-1.nope", cluster_uid="u"))
    current = msgspec.structs.replace(old, protocol=AGENT_PROTOCOL)
    assert logic.admit(connected, current).agent_version == "0.1.0"
