"""The CLI's day-two verbs against a real platform: they say what a deletion takes, ask only at a terminal
(scripted, they go ahead), and a refusal is an error with nothing changed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import Stack


def tether(stack: Stack, token: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TETHER_SERVER=stack.api, TETHER_TOKEN=token, TETHER_CONFIG=str(home / "config.json"))
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args], env=env, capture_output=True, text=True, timeout=120
    )


async def test_cli_tokens_users_teams_projects_clusters(stack: Stack, tmp_path: Path) -> None:
    await stack.connected("c1", tmp_path / "c1")
    bob = await stack.user("bob")
    admin = stack.admin_token

    def run(token: str, *args: str) -> subprocess.CompletedProcess[str]:
        return tether(stack, token, *args, home=tmp_path)

    # tokens: create another (printed once on stdout), list, rotate, revoke
    created = run(bob, "token", "create", "--name", "laptop", "--expires-in", "30d")
    assert created.returncode == 0, created.stderr
    laptop = created.stdout.strip()
    assert laptop.startswith("tat_") and "laptop" not in created.stdout
    listing = run(laptop, "token", "list")
    assert "laptop" in listing.stdout and laptop not in listing.stdout
    token_id = next(line.split()[0] for line in listing.stdout.splitlines() if "laptop" in line)
    rotated = run(bob, "token", "rotate", token_id)
    assert rotated.returncode == 0, rotated.stderr
    assert run(laptop, "whoami").returncode != 0
    new_id = next(line.split()[0] for line in run(bob, "token", "list").stdout.splitlines() if "laptop" in line)
    assert run(bob, "token", "revoke", new_id).returncode == 0
    assert run(rotated.stdout.strip(), "whoami").returncode != 0
    denied = run(bob, "token", "list", "--user", "admin")
    assert denied.returncode != 0 and "permission denied" in denied.stderr

    # teams and users: deletions say what they take
    assert run(admin, "team", "create", "devs", "--member", "bob").returncode == 0
    assert run(admin, "project", "create", "p1", "--cluster", "c1", "--quota", "tenants=1").returncode == 0
    assert run(admin, "project", "add-member", "p1", "--team", "devs", "--role", "user").returncode == 0
    refused = run(bob, "team", "delete", "devs", "--yes")
    assert refused.returncode != 0 and "permission denied" in refused.stderr
    gone = run(admin, "team", "delete", "devs")  # scripted (stdin is no terminal): no question
    assert gone.returncode == 0, gone.stderr
    assert "membership of user bob" in gone.stderr and "role user in project p1" in gone.stderr

    # projects: update, then delete refused while it has a tenant, then --cascade with progress
    updated = run(admin, "project", "update", "p1", "--quota", "tenants=3", "-o", "json")
    assert updated.returncode == 0 and '"tenants": 3' in updated.stdout
    assert run(admin, "tenant", "create", "t1", "-p", "p1", "--cpu", "2", "--wait").returncode == 0
    no = run(admin, "project", "delete", "p1", "--yes")
    assert no.returncode != 0 and "--cascade" in no.stderr
    yes = run(admin, "project", "delete", "p1", "--cascade", "--yes")
    assert yes.returncode == 0, yes.stderr
    assert "1 tenant cluster(s) and 0 space(s)" in yes.stderr and "deleted" in yes.stdout
    assert run(admin, "project", "get", "p1").returncode != 0

    # clusters: update labels; connect an existing name again only with --rotate-token; remove
    assert run(admin, "cluster", "update", "c1", "--label", "env=prod").returncode == 0
    assert "env=prod" in run(admin, "cluster", "list").stdout
    assert run(admin, "cluster", "connect", "edge").returncode == 0
    again = run(admin, "cluster", "connect", "edge")
    assert again.returncode != 0 and "--rotate-token" in again.stderr
    assert run(admin, "cluster", "connect", "edge", "--rotate-token").returncode == 0
    removed = run(admin, "cluster", "remove", "edge", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "edge" not in run(admin, "cluster", "list").stdout

    user_gone = run(admin, "user", "delete", "bob", "--yes")
    assert user_gone.returncode == 0, user_gone.stderr
    assert run(bob, "whoami").returncode != 0
