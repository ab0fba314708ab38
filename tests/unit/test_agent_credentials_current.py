"""An agent whose NATS JWT was issued by an earlier version (for the desired state's one bucket) renews it at
once instead of at three quarters of its life: until then its consumer on its cluster's bucket is out of its
reach (``agent.identity.renewal.current``)."""

from __future__ import annotations

import base64
import json

from agent.identity.renewal import current
from schemas import subjects
from services.bus.identity import agent_permissions


def jwt_with(pub_allow: list[str]) -> str:
    claims = base64.urlsafe_b64encode(json.dumps({"nats": {"pub": {"allow": pub_allow}}}).encode()).rstrip(b"=")
    return f"e30.{claims.decode()}.c2ln"


def test_a_jwt_of_this_version_is_current_and_one_for_the_one_bucket_is_not() -> None:
    this_version, _ = agent_permissions("c1")
    assert current(jwt_with(this_version), "c1")
    consumer = subjects.agent_consumer("c1")
    earlier = [p for p in this_version if subjects.desired_stream("c1") not in p] + [
        f"$JS.API.CONSUMER.INFO.KV_tether-desired.{consumer}",
        f"$JS.API.CONSUMER.MSG.NEXT.KV_tether-desired.{consumer}",
    ]
    assert not current(jwt_with(earlier), "c1")
    assert not current(jwt_with(agent_permissions("c2")[0]), "c1"), "another cluster's"
    assert not current("not-a-jwt", "c1")
