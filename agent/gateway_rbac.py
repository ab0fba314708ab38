"""The subjects the gateway may impersonate, granted by name as members first use it.

RBAC cannot grant "impersonate every ``tether:user:*``": a rule names its users.
The agent's manifests therefore bind it to the ClusterRole
``tether-agent-impersonate`` and let it patch (with ``escalate``) that one role;
an admission policy lets it write nothing there but ``impersonate`` of
``tether:user:*`` users and ``tether:team:*`` / ``system:authenticated`` groups.
Before a member's first request, this module adds their user and teams to the
role (compare-and-set on its resourceVersion) and waits until the API server's
authorizer agrees (SelfSubjectAccessReview).

Where the role does not exist (an agent running with broader rights, e.g. a
developer's admin kubeconfig), nothing is granted here and nothing is needed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

logger = logging.getLogger(__name__)

ROLE = "tether-agent-impersonate"
ROLE_PATH = f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{ROLE}"
SSAR_PATH = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
AUTHENTICATED = "system:authenticated"
PROPAGATION_TIMEOUT = 10.0
"""Seconds to wait for the API server's authorizer to see a grant (its RBAC cache follows a watch)."""
ABSENT_RECHECK = 60.0
"""Seconds before a missing role is looked for again."""


def names_in(role: dict[str, Any], resource: str) -> set[str]:
    out: set[str] = set()
    for rule in role.get("rules") or []:
        if rule.get("resources") == [resource] and rule.get("verbs") == ["impersonate"]:
            out.update(str(n) for n in rule.get("resourceNames") or [])
    return out


def rules_for(users: set[str], groups: set[str]) -> list[dict[str, Any]]:
    return [
        {"apiGroups": [""], "resources": ["users"], "resourceNames": sorted(users), "verbs": ["impersonate"]},
        {"apiGroups": [""], "resources": ["groups"], "resourceNames": sorted(groups), "verbs": ["impersonate"]},
    ]


class GrantError(Exception):
    pass


class Grants:
    """What this agent knows it may impersonate; grows as members use the gateway."""

    def __init__(self) -> None:
        self._users: set[str] = set()
        self._groups: set[str] = {AUTHENTICATED}
        self._lock = asyncio.Lock()
        self._absent_until = 0.0

    def forget(self) -> None:
        """After an impersonation refusal (the role was re-applied): look again next time."""
        self._users.clear()
        self._groups = {AUTHENTICATED}

    async def ensure(
        self, client: httpx.AsyncClient, base: str, auth: list[tuple[str, str]], user: str, groups: list[str]
    ) -> None:
        want_groups = set(groups) | {AUTHENTICATED}
        if user in self._users and want_groups <= self._groups:
            return
        if time.monotonic() < self._absent_until:
            return
        async with self._lock:
            if user in self._users and want_groups <= self._groups:
                return
            granted = await self._grant(client, base, auth, user, want_groups)
            if granted:
                await self._wait_effective(client, base, auth, user, want_groups)
                self._users.add(user)
                self._groups |= want_groups

    async def _grant(
        self, client: httpx.AsyncClient, base: str, auth: list[tuple[str, str]], user: str, groups: set[str]
    ) -> bool:
        """Add ``user`` and ``groups`` to the role; False when there is no role to manage."""
        for _attempt in range(5):
            resp = await client.get(base + ROLE_PATH, headers=auth)
            if resp.status_code in (403, 404):
                logger.info(
                    "gateway: no impersonation role %s to manage (%d); relying on the agent's own rights",
                    ROLE,
                    resp.status_code,
                )
                self._absent_until = time.monotonic() + ABSENT_RECHECK
                return False
            if resp.status_code != 200:
                raise GrantError(f"reading the ClusterRole {ROLE}: HTTP {resp.status_code}")
            role = resp.json()
            users, have_groups = names_in(role, "users"), names_in(role, "groups")
            if user in users and groups <= have_groups:
                return True
            patch = {
                "metadata": {"resourceVersion": role["metadata"]["resourceVersion"]},
                "rules": rules_for(users | {user}, have_groups | groups),
            }
            headers = [*auth, ("Content-Type", "application/merge-patch+json")]
            resp = await client.patch(base + ROLE_PATH, json=patch, headers=headers)
            if resp.status_code == 200:
                logger.info("gateway: may now impersonate %s (groups %s)", user, ", ".join(sorted(groups)))
                return True
            if resp.status_code != 409:
                raise GrantError(f"granting impersonation of {user}: HTTP {resp.status_code}: {resp.text[:300]}")
        raise GrantError(f"granting impersonation of {user}: the role kept changing")

    async def _wait_effective(
        self, client: httpx.AsyncClient, base: str, auth: list[tuple[str, str]], user: str, groups: set[str]
    ) -> None:
        checks = [("users", user)] + [("groups", g) for g in sorted(groups)]
        deadline = time.monotonic() + PROPAGATION_TIMEOUT
        for resource, name in checks:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": {"verb": "impersonate", "resource": resource, "name": name}},
            }
            while True:
                resp = await client.post(base + SSAR_PATH, json=body, headers=auth)
                if resp.status_code == 201 and (resp.json().get("status") or {}).get("allowed"):
                    break
                if time.monotonic() > deadline:
                    raise GrantError(f"impersonation of {resource} {name} was granted but is not in effect yet")
                await asyncio.sleep(0.1)
