"""The agent's impersonation is least privilege: only Tether subjects, by name, proved by SubjectAccessReview.

The agent runs as the ServiceAccount of its own manifests (not as a cluster admin): a member's first request
through the gateway adds them to the role ``tether-agent-impersonate``, and nothing else can be put there.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.drivers.kube import KubeApi
from agent.errors import DriverError
from services.api import manifests
from tests.gateway.conftest import kube_agent, member_kubectl
from tests.harness import Stack, wait_for
from tests.kube.cluster import ControlPlane
from tests.kube.helpers import can
from tests.kube.test_kube_agent_e2e import install

pytestmark = pytest.mark.kube

AGENT = manifests.AGENT_USER
AGENT_GROUPS = ("system:serviceaccounts", "system:serviceaccounts:tether-agent", "system:authenticated")


def may_impersonate(api: KubeApi, resource: str, name: str, namespace: str = "") -> bool:
    return can(
        api, user=AGENT, groups=AGENT_GROUPS, verb="impersonate", resource=resource, name=name, namespace=namespace
    )


async def test_the_agent_impersonates_only_tether_subjects(
    stack: Stack, control_plane: ControlPlane, admin_api: KubeApi, tmp_path: Path
) -> None:
    info = await stack.connect_cluster("kube-rbac")
    agent_kubeconfig = install(control_plane, admin_api, info["manifests"], tmp_path / "agent-kubeconfig")

    for resource, name, namespace in [
        ("users", "admin", ""),
        ("users", "system:admin", ""),
        ("users", "system:kube-controller-manager", ""),
        ("users", "tether:user:bob", ""),  # not before bob uses the gateway
        ("users", "", ""),
        ("groups", "system:masters", ""),
        ("groups", "system:nodes", ""),
        ("groups", "", ""),
        ("serviceaccounts", "default", "kube-system"),
        ("serviceaccounts", "tether-agent", "tether-agent"),
        ("uids", "0", ""),
        ("userextras/scopes", "x", ""),
    ]:
        assert not may_impersonate(admin_api, resource, name, namespace), f"the agent may impersonate {resource} {name}"

    # The agent's own credentials cannot widen its role: the admission policy refuses anything but Tether subjects.
    agent_api = KubeApi.from_kubeconfig(agent_kubeconfig)
    try:
        # The policy takes effect once the API server has loaded it: probe with a harmless change first.
        probe = [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["not-tether"], "verbs": ["impersonate"]}]
        seed = [dict(r) for r in manifests.IMPERSONATOR_SEED_RULES]

        async def policy_loaded() -> bool:
            try:
                agent_api.patch_merge("ClusterRole", manifests.IMPERSONATOR, {"rules": probe})
            except DriverError as exc:
                return "only list Tether users and teams" in str(exc)
            admin_api.patch_merge("ClusterRole", manifests.IMPERSONATOR, {"rules": seed})
            return False

        await wait_for(policy_loaded, timeout=20, what="the impersonation policy to take effect")
        for rules in (
            [
                {
                    "apiGroups": [""],
                    "resources": ["groups"],
                    "resourceNames": ["system:masters"],
                    "verbs": ["impersonate"],
                }
            ],
            [{"apiGroups": [""], "resources": ["users"], "resourceNames": ["admin"], "verbs": ["impersonate"]}],
            [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]}],  # every user
            [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
            [{"apiGroups": [""], "resources": ["serviceaccounts"], "resourceNames": ["x"], "verbs": ["impersonate"]}],
        ):
            with pytest.raises(DriverError, match="only list Tether users and teams"):
                agent_api.patch_merge("ClusterRole", manifests.IMPERSONATOR, {"rules": rules})
        with pytest.raises(DriverError, match="cannot patch"):
            agent_api.patch_merge("ClusterRole", "admin", {"rules": []})
    finally:
        agent_api.close()
    assert not may_impersonate(admin_api, "groups", "system:masters")

    # The agent at work, as that ServiceAccount: bob's first request grants bob, and only bob.
    kube_agent(stack, agent_kubeconfig, tmp_path / "agent-state", info["token"])
    await stack.wait_online("kube-rbac", timeout=30)
    await stack.ok("POST", "/api/v1/projects", json={"name": "imp", "clusters": ["kube-rbac"]})
    bob = await stack.user("bob")
    await stack.ok("POST", "/api/v1/teams", json={"name": "devs", "members": ["bob"]})
    await stack.ok("PUT", "/api/v1/projects/imp/members", json={"user": "bob", "role": "user"})
    await stack.ok("POST", "/api/v1/projects/imp/spaces", token=bob, json={"name": "s1", "cluster": "kube-rbac"})
    await stack.wait_synced("space", "imp", "s1")
    kb = await member_kubectl(stack, bob, "space", "imp", "s1", tmp_path / "bob")
    await kb.ok("create", "configmap", "by-bob", "--from-literal=a=1")
    got = await kb.ok("get", "configmap", "by-bob", "-o", "jsonpath={.metadata.managedFields[0].manager}")
    assert got == "kubectl-create"
    assert may_impersonate(admin_api, "users", "tether:user:bob")
    assert may_impersonate(admin_api, "groups", "tether:team:devs")
    assert not may_impersonate(admin_api, "users", "tether:user:carol")
    assert not may_impersonate(admin_api, "groups", "system:masters")
    err = await kb.refused("get", "secrets", "-n", "kube-system")
    assert "Forbidden" in err
