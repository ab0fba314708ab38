"""Every mutating API call and every command sent is audited (one record for a call that issued a command);
tokens never leak after creation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.harness import ROOT, Stack, wait_for


async def test_audit_trail_and_token_secrecy(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    created = await stack.ok("POST", "/api/v1/users", json={"name": "bob"})
    bob = created["token"]
    await stack.ok("POST", "/api/v1/projects", json={"name": "p1"})
    await stack.ok("PUT", "/api/v1/projects/p1/members", json={"user": "bob", "role": "user"})
    space = await stack.ok("POST", "/api/v1/projects/p1/spaces", token=bob, json={"name": "s1"})
    await stack.wait_synced("space", "p1", "s1")
    assert (await stack.req("POST", "/api/v1/clusters", token=bob, json={"name": "nope"})).status_code == 403
    assert (await stack.req("POST", "/api/v1/clusters", token="tat_" + "x" * 40, json={"name": "x"})).status_code == 401

    async def trail(**params: str) -> list[dict[str, object]]:
        return list((await stack.ok("GET", "/api/v1/audit", params=params))["items"])

    def has(items: list[dict[str, object]], **want: object) -> bool:
        return any(all(item.get(k) == v for k, v in want.items()) for item in items)

    items = await wait_for(lambda: _ready(trail), what="audit records")
    assert has(items, kind="api", user="admin", action="POST /api/v1/users", result="201")
    assert has(items, kind="api", user="admin", action="POST /api/v1/clusters", target="clusters", result="201")
    # The call that issued a command has one record, the command's, naming the call.
    assert not has(items, kind="api", action="POST /api/v1/projects/p1/spaces")
    assert has(items, kind="api", user="bob", action="POST /api/v1/clusters", result="403")
    assert has(items, kind="api", user="", action="POST /api/v1/clusters", result="401")
    assert has(
        items,
        kind="command",
        user="bob",
        action="create",
        target="space/p1/s1",
        cluster="c1",
        result="issued",
        op_id=space["desired"]["op_id"],
        call="POST /api/v1/projects/p1/spaces",
    )
    assert all(i["user"] == "bob" for i in await trail(user="bob"))
    assert {i["cluster"] for i in await trail(cluster="c1")} == {"c1"}
    assert (await stack.req("GET", "/api/v1/audit", token=bob)).status_code == 403
    bad = await stack.req("GET", "/api/v1/audit", params={"since": "yesterday-ish"})
    assert bad.status_code == 400 and "invalid since" in bad.json()["error"]["message"]

    # The CLI reads the same trail.
    env = dict(os.environ, TETHER_SERVER=stack.api, TETHER_TOKEN=stack.admin_token)
    res = subprocess.run(
        [sys.executable, "-m", "services.cli", "audit", "list", "--user", "bob", "-o", "json"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert {i["user"] for i in json.loads(res.stdout)} == {"bob"}

    # The token was shown once, at creation: never in logs, listings or the trail.
    users = await stack.ok("GET", "/api/v1/users")
    assert bob not in json.dumps(users) and bob not in json.dumps(await trail())
    for log in [*(tmp_path / "logs").glob("*.log"), tmp_path / "nats" / "nats.log"]:
        assert bob not in log.read_text(errors="replace"), f"token leaked into {log.name}"
        assert stack.admin_token not in log.read_text(errors="replace"), f"admin token leaked into {log.name}"


async def _ready(trail) -> list[dict[str, object]] | None:  # type: ignore[no-untyped-def]
    items = await trail()
    return items if any(i["kind"] == "command" for i in items) and len(items) >= 6 else None
