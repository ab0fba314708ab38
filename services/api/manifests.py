"""The Kubernetes manifests that install a cluster's agent (``tether cluster connect NAME --manifests``).

Pure Python (no ``kubernetes``): plain dicts rendered as multi-document YAML.
The Helm chart in ``agent/deploy/helm/tether-agent`` renders the same objects
(a test checks ``helm template`` against this module).

What gets installed, all in the ``tether-agent`` namespace unless cluster-scoped:

- **ServiceAccount** ``tether-agent``;
- **ClusterRole/ClusterRoleBinding** ``tether-agent``: only what the kube driver
  does. Namespaces (it makes one per tenant cluster and space), nodes (read, for
  health), and in any namespace the kinds it manages there (ServiceAccounts,
  Services, ResourceQuotas, LimitRanges, RoleBindings, StatefulSets,
  NetworkPolicies). Secrets: create, and read or change only by the names of a
  tenant's vCluster configuration (``vc-config-vcluster``) and read its kubeconfig
  (``vc-vcluster``), never anyone else's. Pods: read (why a control plane is not
  Ready) and delete (sleep stops what vCluster synced). ``bind`` only on the
  ClusterRoles ``admin``, ``edit`` and ``view`` (members' access in spaces) and
  ``tether-tenant-syncer``. No Roles, ClusterRoles or ClusterRoleBindings, and no
  right to create pods;
- **ClusterRole** ``tether-tenant-syncer``: what a tenant's vCluster syncer needs
  (the vCluster chart's namespaced Role of the pinned version for the features we
  turn on). The agent binds it with a RoleBinding in each tenant's namespace, so
  each syncer has these rights in its own namespace only, and the agent itself
  does not need to hold them (RBAC lets it grant what it may ``bind``);
- **ValidatingAdmissionPolicy** ``tether-agent-namespaces`` (+ binding): what the
  RBAC above cannot say. The agent's writes (as any ServiceAccount named
  ``tether-agent``) are refused outside namespaces
  labelled ``tether.dev/managed-by=tether``, and it can neither label an
  existing namespace as its own nor delete one that is not;
- **Role/RoleBinding** ``tether-agent`` in its own namespace: read and patch the
  Secret ``tether-agent-state`` only;
- **Secret** ``tether-agent-token``: the one-time connect token (spent by the
  first connect; harmless afterwards);
- **Secret** ``tether-agent-state``: where the agent keeps its long-lived
  credentials (``$TETHER_AGENT_STATE_SECRET``), so a rescheduled pod is the same
  agent. Its state directory itself is an ``emptyDir``;
- **Deployment** ``tether-agent``: one replica, ``Recreate`` (never two agents at
  once), non-root, read-only root filesystem, no privilege escalation.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from schemas.syncer import SYNCER_RULES
from services import VERSION

NAMESPACE = "tether-agent"
NAME = "tether-agent"
TOKEN_SECRET = "tether-agent-token"
CA_CONFIGMAP = "tether-agent-ca"
"""The CA the agent verifies a TLS NATS server with (``tether up --tls``): public, so a ConfigMap."""
CA_DIR = "/etc/tether-agent/ca"
CA_FILE = f"{CA_DIR}/ca.crt"
STATE_SECRET = "tether-agent-state"
STATE_DIR = "/var/lib/tether-agent"
DEFAULT_IMAGE = f"ghcr.io/tether-dev/tether-agent:{VERSION}"
AGENT_USER = f"system:serviceaccount:{NAMESPACE}:{NAME}"
MEMBER_CLUSTER_ROLES = ("admin", "edit", "view")
SYNCER_CLUSTER_ROLE = "tether-tenant-syncer"
TENANT_CONFIG_SECRET = "vc-config-vcluster"
TENANT_KUBECONFIG_SECRET = "vc-vcluster"
MANAGED_LABEL = "tether.dev/managed-by"
IMPERSONATOR = "tether-agent-impersonate"
"""The ClusterRole naming the Tether subjects the agent may impersonate for the Kubernetes gateway. RBAC
cannot say "users starting with tether:user:", so the agent adds each member (``tether:user:<name>``) and
team (``tether:team:<name>``) by name as they first use the gateway (``agent/gateway_rbac.py``); the
admission policy ``tether-agent-impersonation`` lets it write nothing else into that role."""
IMPERSONATOR_SEED_RULES: tuple[Obj, ...] = (
    # Never an empty resourceNames: that would mean every name. "tether:user:-" is no valid user name.
    {"apiGroups": [""], "resources": ["users"], "resourceNames": ["tether:user:-"], "verbs": ["impersonate"]},
    {"apiGroups": [""], "resources": ["groups"], "resourceNames": ["system:authenticated"], "verbs": ["impersonate"]},
)
IMPERSONATOR_EXPRESSION = (
    "!has(object.aggregationRule) && has(object.rules) && object.rules.all(r, "
    "r.verbs == ['impersonate'] && r.apiGroups == [''] && has(r.resourceNames) && size(r.resourceNames) > 0 && "
    "((r.resources == ['users'] && r.resourceNames.all(n, n.startsWith('tether:user:'))) || "
    "(r.resources == ['groups'] && r.resourceNames.all(n, n.startsWith('tether:team:') || "
    "n == 'system:authenticated'))))"
)

Obj = dict[str, Any]

WRITE = ["get", "list", "create", "patch", "delete"]
"""Server-side apply is ``patch`` (and ``create`` when the object is new); nothing uses ``update``."""

CLUSTER_RULES: tuple[Obj, ...] = (
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": WRITE},
    {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list"]},
    {
        "apiGroups": [""],
        "resources": ["serviceaccounts", "services", "resourcequotas", "limitranges"],
        "verbs": WRITE,
    },
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
    {
        "apiGroups": [""],
        "resources": ["secrets"],
        "resourceNames": [TENANT_CONFIG_SECRET],
        "verbs": ["get", "patch", "delete"],
    },
    {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [TENANT_KUBECONFIG_SECRET], "verbs": ["get"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "delete"]},
    {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": WRITE},
    {
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "resourceNames": [*MEMBER_CLUSTER_ROLES, SYNCER_CLUSTER_ROLE],
        "verbs": ["bind"],
    },
    {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": WRITE},
    {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": WRITE},
    {
        # The gateway's impersonation list: only this role, and only Tether subjects in it (admission policy).
        "apiGroups": ["rbac.authorization.k8s.io"],
        "resources": ["clusterroles"],
        "resourceNames": [IMPERSONATOR],
        "verbs": ["get", "patch", "escalate"],
    },
)
"""The agent's cluster-wide rules: exactly what ``agent.drivers.kube`` and its gateway do."""

POLICY_RESOURCES = (
    "namespaces",
    "serviceaccounts",
    "services",
    "secrets",
    "pods",
    "resourcequotas",
    "limitranges",
    "rolebindings",
    "statefulsets",
    "networkpolicies",
)


def _owned(var: str) -> str:
    return (
        f"{var} != null && has({var}.metadata.labels) && '{MANAGED_LABEL}' in {var}.metadata.labels && "
        f"{var}.metadata.labels['{MANAGED_LABEL}'] == 'tether'"
    )


POLICY_EXPRESSION = (
    # Its own state Secret is the one thing it writes outside them (Secrets are in the rules for tenants' configs).
    f"(request.resource.resource == 'secrets' && request.namespace == '{NAMESPACE}' && "
    f"request.name == '{STATE_SECRET}') || "
    "(request.resource.resource == 'namespaces' ? "
    f"((request.operation == 'CREATE' || ({_owned('oldObject')})) && "
    f"(request.operation == 'DELETE' || ({_owned('object')}))) : "
    f"({_owned('namespaceObject')}))"
)


AGENT_MATCH = (
    f"request.userInfo.username.startsWith('system:serviceaccount:') && request.userInfo.username.endsWith(':{NAME}')"
)
"""Whom the admission policy restricts: a ServiceAccount named ``tether-agent`` in any namespace (the
Deployment's, or a sidecar's beside another workload, see ``agent/deploy/README.md``)."""


def labels(cluster: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "tether", "tether.dev/cluster": cluster}


def agent_container(*, server: str, image: str, ca: bool = False) -> Obj:
    """The agent's container (the same in the Deployment and in the sidecar variant); with ``ca``, it verifies
    the server with the CA mounted from the ConfigMap ``tether-agent-ca``."""
    container: Obj = {
        "name": "agent",
        "image": image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["python", "-m", "agent"],
        "args": ["run", "--driver", "kube", "--server", server, "--state-dir", STATE_DIR],
        "env": [
            {
                "name": "TETHER_AGENT_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": TOKEN_SECRET, "key": "token", "optional": True}},
            },
            {"name": "TETHER_AGENT_STATE_SECRET", "value": f"{NAMESPACE}/{STATE_SECRET}"},
            {"name": "HOME", "value": "/tmp"},
        ],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": 65532,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [{"name": "state", "mountPath": STATE_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    if ca:
        container["args"] += ["--ca-file", CA_FILE]
        container["volumeMounts"].append({"name": "ca", "mountPath": CA_DIR, "readOnly": True})
    return container


def objects(*, cluster: str, token: str, server: str, image: str = DEFAULT_IMAGE, ca_pem: str = "") -> list[Obj]:
    """Every object that installs the agent of ``cluster``, in the order to apply them; ``ca_pem``: the CA of a
    TLS NATS server, carried in a ConfigMap and passed with ``--ca-file``."""
    common = labels(cluster)

    def meta(name: str, namespaced: bool = True) -> Obj:
        out: Obj = {"name": name}
        if namespaced:
            out["namespace"] = NAMESPACE
        out["labels"] = dict(common)
        return out

    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": meta(NAMESPACE, namespaced=False)},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(NAME)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(NAME, namespaced=False),
            "rules": [json.loads(json.dumps(rule)) for rule in CLUSTER_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(SYNCER_CLUSTER_ROLE, namespaced=False),
            "rules": [json.loads(json.dumps(rule)) for rule in SYNCER_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta(NAME, namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": meta("tether-agent-namespaces", namespaced=False),
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["", "rbac.authorization.k8s.io", "apps", "networking.k8s.io"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE", "DELETE"],
                            "resources": list(POLICY_RESOURCES),
                        }
                    ]
                },
                "matchConditions": [{"name": "the-agent", "expression": AGENT_MATCH}],
                "validations": [
                    {
                        "expression": POLICY_EXPRESSION,
                        "message": "the Tether agent only manages namespaces labelled tether.dev/managed-by=tether "
                        "and what is inside them",
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": meta("tether-agent-namespaces", namespaced=False),
            "spec": {"policyName": "tether-agent-namespaces", "validationActions": ["Deny"]},
        },
        *impersonation_objects(meta),
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": meta(NAME),
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["secrets"],
                    "resourceNames": [STATE_SECRET],
                    "verbs": ["get", "patch"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": meta(NAME),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": meta(TOKEN_SECRET),
            "type": "Opaque",
            "stringData": {"token": token},
        },
        {"apiVersion": "v1", "kind": "Secret", "metadata": meta(STATE_SECRET), "type": "Opaque"},
        *(
            [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(CA_CONFIGMAP), "data": {"ca.crt": ca_pem}}]
            if ca_pem
            else []
        ),
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta(NAME),
            "spec": {
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": {"app.kubernetes.io/name": NAME}},
                "template": {
                    "metadata": {"labels": dict(common)},
                    "spec": {
                        "serviceAccountName": NAME,
                        "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                        "containers": [agent_container(server=server, image=image, ca=bool(ca_pem))],
                        "volumes": [
                            {"name": "state", "emptyDir": {}},
                            {"name": "tmp", "emptyDir": {}},
                            *([{"name": "ca", "configMap": {"name": CA_CONFIGMAP}}] if ca_pem else []),
                        ],
                    },
                },
            },
        },
    ]


def impersonation_objects(meta: Any) -> list[Obj]:
    """The role of the subjects the gateway impersonates, its binding, and the policy that keeps it to Tether's."""
    # The policy first: it must be in force before the role it guards is bound.
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": meta("tether-agent-impersonation", namespaced=False),
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": ["rbac.authorization.k8s.io"],
                            "apiVersions": ["*"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["clusterroles"],
                        }
                    ]
                },
                "matchConditions": [{"name": "the-agent", "expression": AGENT_MATCH}],
                "validations": [
                    {
                        "expression": IMPERSONATOR_EXPRESSION,
                        "message": "the Tether agent may only list Tether users and teams to impersonate",
                        "reason": "Forbidden",
                    }
                ],
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": meta("tether-agent-impersonation", namespaced=False),
            "spec": {"policyName": "tether-agent-impersonation", "validationActions": ["Deny"]},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": meta(IMPERSONATOR, namespaced=False),
            "rules": [json.loads(json.dumps(rule)) for rule in IMPERSONATOR_SEED_RULES],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": meta(IMPERSONATOR, namespaced=False),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": IMPERSONATOR},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
    ]


MAX_CA_BYTES = 64 * 1024


def read_ca(path: str) -> str:
    """The PEM text of the platform's CA file for the manifests ('' without one); a CA bundle is small, so a
    file over 64 KiB or without a certificate is a mistake said so, not shipped to every cluster."""
    if not path:
        return ""
    with open(path, "rb") as f:
        data = f.read(MAX_CA_BYTES + 1)
    if len(data) > MAX_CA_BYTES or b"-----BEGIN CERTIFICATE-----" not in data:
        raise ValueError(f"{path} is not a PEM CA bundle of at most {MAX_CA_BYTES} bytes")
    return data.decode("ascii")


def render(*, cluster: str, token: str, server: str, image: str = DEFAULT_IMAGE, ca_pem: str = "") -> str:
    """The manifests as multi-document YAML, ready for ``kubectl apply -f -``."""
    header = (
        f"# Tether agent for cluster {cluster!r}: kubectl apply -f <this file>\n"
        "# The Secret tether-agent-token holds a one-time connect token: keep this file private.\n"
    )
    return header + yaml.safe_dump_all(
        objects(cluster=cluster, token=token, server=server, image=image, ca_pem=ca_pem),
        sort_keys=False,
        explicit_start=True,
    )
