"""The Kubernetes objects behind one tenant cluster or space: pure functions, no I/O.

``agent.drivers.kube`` sends these with server-side apply; everything that
decides *what* exists on the cluster lives here, so it can be read (and
tested) without an API server. Nothing here imports ``kubernetes``: objects
are plain dicts in the API's JSON shape.

Layout on the host cluster (see ``agent/deploy/README.md`` for the picture):

- one **namespace** per tenant cluster (``tether-t-<project>-<name>``) and per
  space (``tether-<project>-<name>``), labelled with its owner and annotated with
  the generation that produced it, the operation id, the state, the version and
  the whole spec (``tether.dev/spec``), so the agent can read its inventory, and
  the drift of every object, back from the cluster alone;
- in it a **ResourceQuota** and a **LimitRange** from the workload's resources
  (else the project's quota), and a **NetworkPolicy** that only admits traffic
  from the same namespace;
- a tenant cluster's namespace also holds its control plane, a **vCluster** of a pinned version
  (``agent.drivers.vcluster``): its configuration Secret, ServiceAccount, a RoleBinding of that
  ServiceAccount to the syncer's ClusterRole (in this namespace only), two Services and a StatefulSet
  with a PersistentVolumeClaim (replicas 0 while it sleeps). Its members get **no** binding on the
  host: their access is applied inside the tenant, through its own API;
- a space's namespace holds one RoleBinding per member, to the ClusterRole
  ``admin``, ``edit`` or ``view``, for ``User tether:user:<name>`` or
  ``Group tether:team:<name>``. A sleeping space admits no new pods (quota
  ``pods: 0``); the members' own workloads are theirs and are not touched.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from agent.drivers import vcluster
from agent.drivers.vcluster import VClusterSettings
from schemas.messages import AccessLevel, DesiredState, Member, WorkloadKind, WorkloadRef, WorkloadSpec

Obj = dict[str, Any]

FIELD_MANAGER = "tether-agent"
"""The one field manager of every server-side apply the agent makes."""

DOMAIN = "tether.dev"
LABEL_MANAGED_BY = f"{DOMAIN}/managed-by"
MANAGED_BY = "tether"
LABEL_KIND = f"{DOMAIN}/kind"
LABEL_PROJECT = f"{DOMAIN}/project"
LABEL_NAME = f"{DOMAIN}/name"
LABEL_MEMBER = f"{DOMAIN}/member"

ANN_GENERATION = f"{DOMAIN}/generation"
ANN_OP_ID = f"{DOMAIN}/op-id"
ANN_STATE = f"{DOMAIN}/state"
ANN_VERSION = f"{DOMAIN}/version"
ANN_SLEPT_AT = f"{DOMAIN}/slept-at"
ANN_ACTIVE_AT = f"{DOMAIN}/active-at"
ANN_SPEC = f"{DOMAIN}/spec"

MANAGED_SELECTOR = f"{LABEL_MANAGED_BY}={MANAGED_BY}"
"""Label selector of every object the platform owns."""

CONTROL_PLANE_WORKLOAD = vcluster.NAME
"""Name of a tenant's StatefulSet and Service (the vCluster's name)."""
QUOTA_NAME = "tether-quota"
LIMITS_NAME = "tether-limits"
ISOLATION_NAME = "tether-isolation"
CONTROL_PLANE_PORT = 6443

MEMBER_ROLES: dict[AccessLevel, str] = {"admin": "admin", "edit": "edit", "view": "view"}
"""The ClusterRole a member's access level gives in their space."""
USER_PREFIX = "tether:user:"
GROUP_PREFIX = "tether:team:"

ANN_RESTORE = f"{DOMAIN}/restore-replicas"
"""On a host workload while its tenant sleeps: the replicas to give it back on wake."""

_KIND_ORDER = (
    "Namespace",
    "ServiceAccount",
    "RoleBinding",
    "Secret",
    "ResourceQuota",
    "LimitRange",
    "NetworkPolicy",
    "Service",
    "StatefulSet",
)
TENANT_KINDS: tuple[str, ...] = _KIND_ORDER[1:]
"""Kinds the agent owns inside a tenant cluster's namespace, in apply order."""
SPACE_KINDS: tuple[str, ...] = ("RoleBinding", "ResourceQuota", "LimitRange", "NetworkPolicy")
"""Kinds the agent owns inside a space's namespace, in apply order."""


class SpecError(ValueError):
    """A spec that cannot be turned into Kubernetes objects (the message says why)."""


@dataclass(frozen=True, kw_only=True)
class TenantSettings:
    """How tenant control planes are run on this cluster."""

    vcluster: VClusterSettings = field(default_factory=VClusterSettings)
    """Images, registry and the control plane's volume."""
    agent_namespace: str = "tether-agent"
    """The agent's namespace: its pods may reach each tenant's API (the tenant namespace admits nothing else)."""


# --- names --------------------------------------------------------------------------------------
def namespace_name(kind: WorkloadKind, project: str, name: str) -> str:
    """The namespace of a tenant cluster (``tether-t-<project>-<name>``) or space (``tether-<project>-<name>``).

    Always a DNS-1123 label: when too long it is cut and ends with a hash of the whole identity.
    """
    base = f"tether-t-{project}-{name}" if kind == "tenant" else f"tether-{project}-{name}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(f"{kind}/{project}/{name}".encode()).hexdigest()[:10]
    return f"{base[: 63 - len(digest) - 1].rstrip('-')}-{digest}"


def member_binding_name(member: Member) -> str:
    """``tether-<user|team>-<name>-<access>``.

    The access is part of the name because a RoleBinding's ``roleRef`` cannot
    change: a new access level is a new binding, and the old one is pruned.
    """
    kind, name = parse_subject(member.subject)
    return f"tether-{kind}-{name}-{member.access}"


def parse_subject(subject: str) -> tuple[str, str]:
    """``user:<name>`` / ``team:<name>`` as (kind, name); SpecError when malformed."""
    kind, sep, name = subject.partition(":")
    if not sep or kind not in ("user", "team") or not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name):
        raise SpecError(f"invalid member subject {subject!r}: expected 'user:<name>' or 'team:<name>'")
    if len(name) > 63:
        raise SpecError(f"invalid member subject {subject!r}: the name is longer than 63 characters")
    return kind, name


def tenant_image(settings: TenantSettings, version: str) -> str:
    """The image of the Kubernetes binaries the tenant runs for ``version`` (SpecError when it is not one)."""
    try:
        return vcluster.kubernetes_image(settings.vcluster, version)
    except vcluster.VClusterSpecError as exc:
        raise SpecError(str(exc)) from None


# --- quantities ---------------------------------------------------------------------------------
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": 1e-9, "u": 1e-6, "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_QUANTITY = re.compile(r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E))?$")


def parse_quantity(text: str | int | float) -> float:
    """A Kubernetes quantity (``500m``, ``2Gi``, ``1e3``, ``4``) as a number; ValueError when it is not one."""
    if isinstance(text, int | float):
        return float(text)
    match = _QUANTITY.match(text.strip())
    if not match:
        raise ValueError(f"not a Kubernetes quantity: {text!r}")
    number, exponent, suffix = match.groups()
    value = float(number)
    if exponent:
        return value * 10.0 ** int(exponent[1:])
    if suffix in _BINARY:
        return value * _BINARY[suffix]
    return value * _DECIMAL[str(suffix or "")]


def cpu_quantity(cores: float) -> str:
    """CPU cores as a quantity: ``2``, ``500m``."""
    milli = max(1, math.ceil(cores * 1000 - 1e-6))
    return str(milli // 1000) if milli % 1000 == 0 else f"{milli}m"


def memory_quantity(size: int) -> str:
    """Bytes as a quantity, in the largest binary unit that divides it: ``2Gi``, ``1536Mi``, ``1000``."""
    for suffix, factor in (("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(int(size))


# --- what the namespace says about itself --------------------------------------------------------
def encode_spec(spec: WorkloadSpec) -> str:
    return msgspec.json.encode(spec).decode()


def decode_spec(text: str) -> WorkloadSpec | None:
    try:
        return msgspec.json.decode(text.encode(), type=WorkloadSpec)
    except msgspec.MsgspecError:
        return None


def labels_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def annotations_of(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def is_owned(obj: Mapping[str, Any]) -> bool:
    """Does the object carry the platform's owner label? (Objects without it are never touched.)"""
    return labels_of(obj).get(LABEL_MANAGED_BY) == MANAGED_BY


def owner_of(obj: Mapping[str, Any]) -> WorkloadRef | None:
    """The workload owning an object, from its labels; None when it is not (fully) labelled."""
    labels = labels_of(obj)
    if labels.get(LABEL_MANAGED_BY) != MANAGED_BY:
        return None
    kind, project, name = labels.get(LABEL_KIND), labels.get(LABEL_PROJECT), labels.get(LABEL_NAME)
    if kind not in ("tenant", "space") or not project or not name:
        return None
    return WorkloadRef(kind="tenant" if kind == "tenant" else "space", project=project, name=name)


def generation_of(obj: Mapping[str, Any] | None) -> int:
    """The generation recorded on an object (0 when absent, unreadable, or there is no object)."""
    if obj is None:
        return 0
    try:
        return max(0, int(annotations_of(obj).get(ANN_GENERATION, "0")))
    except ValueError:
        return 0


def float_annotation(obj: Mapping[str, Any] | None, key: str) -> float:
    if obj is None:
        return 0.0
    try:
        value = float(annotations_of(obj).get(key, "0"))
    except ValueError:
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def state_of(obj: Mapping[str, Any]) -> DesiredState:
    state = annotations_of(obj).get(ANN_STATE, "running")
    if state == "sleeping":
        return "sleeping"
    if state == "deleted":
        return "deleted"
    return "running"


def is_terminating(obj: Mapping[str, Any]) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


# --- building the objects -----------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Stamp:
    """What every object of one workload is stamped with."""

    spec: WorkloadSpec
    generation: int
    op_id: str
    slept_at: float = 0.0
    """When the workload went to sleep (0 while it runs)."""
    active_at: float = 0.0
    """When it last became running."""

    @property
    def namespace(self) -> str:
        return namespace_name(self.spec.kind, self.spec.project, self.spec.name)

    def labels(self, **more: str) -> dict[str, str]:
        return {
            LABEL_MANAGED_BY: MANAGED_BY,
            LABEL_KIND: self.spec.kind,
            LABEL_PROJECT: self.spec.project,
            LABEL_NAME: self.spec.name,
            **more,
        }

    def annotations(self) -> dict[str, str]:
        return {ANN_GENERATION: str(self.generation), ANN_OP_ID: self.op_id}

    def meta(self, name: str, **labels: str) -> Obj:
        return {
            "name": name,
            "namespace": self.namespace,
            "labels": self.labels(**labels),
            "annotations": self.annotations(),
        }


def _time(value: float) -> str:
    return f"{value:.3f}"


def namespace_object(stamp: Stamp, *, state: DesiredState | None = None) -> Obj:
    spec = stamp.spec
    state = state or spec.state
    annotations = {
        **stamp.annotations(),
        ANN_STATE: state,
        ANN_VERSION: spec.version if spec.kind == "tenant" else "",
        ANN_SPEC: encode_spec(spec),
    }
    if stamp.active_at:
        annotations[ANN_ACTIVE_AT] = _time(stamp.active_at)
    if state == "sleeping" and stamp.slept_at:
        annotations[ANN_SLEPT_AT] = _time(stamp.slept_at)
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": stamp.namespace,
            "labels": {
                **stamp.labels(),
                # Members and tenant control planes may run what any ordinary workload runs, no more.
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
            },
            "annotations": annotations,
        },
    }


def _limits(spec: WorkloadSpec) -> tuple[float, int]:
    """(cpu cores, memory bytes) the namespace may use: its resources, else the project's quota; 0 = no limit."""
    cpu = spec.resources.cpu if spec.resources.cpu > 0 else (spec.quota.cpu or 0.0)
    memory = spec.resources.memory if spec.resources.memory > 0 else (spec.quota.memory or 0)
    return max(0.0, cpu), max(0, int(memory))


def quota_object(stamp: Stamp) -> Obj | None:
    cpu, memory = _limits(stamp.spec)
    hard: dict[str, str] = {}
    if cpu:
        hard["requests.cpu"] = hard["limits.cpu"] = cpu_quantity(cpu)
    if memory:
        hard["requests.memory"] = hard["limits.memory"] = memory_quantity(memory)
    if stamp.spec.kind == "space" and stamp.spec.state == "sleeping":
        hard["pods"] = "0"
    if not hard:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": stamp.meta(QUOTA_NAME),
        "spec": {"hard": hard},
    }


def limit_range_object(stamp: Stamp) -> Obj | None:
    """Defaults for containers that say nothing (a quota on requests would refuse them), capped by the quota."""
    cpu, memory = _limits(stamp.spec)
    if not cpu and not memory:
        return None
    default: dict[str, str] = {}
    default_request: dict[str, str] = {}
    maximum: dict[str, str] = {}
    if cpu:
        default["cpu"] = cpu_quantity(min(cpu, 0.5))
        default_request["cpu"] = cpu_quantity(min(cpu, 0.1))
        maximum["cpu"] = cpu_quantity(cpu)
    if memory:
        default["memory"] = memory_quantity(min(memory, 512 * 2**20))
        default_request["memory"] = memory_quantity(min(memory, 128 * 2**20))
        maximum["memory"] = memory_quantity(memory)
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": stamp.meta(LIMITS_NAME),
        "spec": {
            "limits": [{"type": "Container", "default": default, "defaultRequest": default_request, "max": maximum}]
        },
    }


def isolation_object(stamp: Stamp, settings: TenantSettings | None = None) -> Obj:
    """Ingress only from pods of the same namespace; a tenant's API also from the agent's namespace."""
    ingress: list[Obj] = [{"from": [{"podSelector": {}}]}]
    if stamp.spec.kind == "tenant" and settings is not None:
        ingress.append(
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": settings.agent_namespace}}}
                ],
                "ports": [{"protocol": "TCP", "port": vcluster.API_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": stamp.meta(ISOLATION_NAME),
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def member_bindings(stamp: Stamp) -> list[Obj]:
    """One RoleBinding per member of a space (the highest access when a subject is listed twice)."""
    rank = {"view": 0, "edit": 1, "admin": 2}
    best: dict[str, Member] = {}
    for member in stamp.spec.members:
        parse_subject(member.subject)
        if member.access not in MEMBER_ROLES:
            raise SpecError(f"invalid access {member.access!r} for {member.subject}: expected admin, edit or view")
        old = best.get(member.subject)
        if old is None or rank[member.access] > rank[old.access]:
            best[member.subject] = member
    out = []
    for subject, member in sorted(best.items()):
        kind, name = parse_subject(subject)
        out.append(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": stamp.meta(member_binding_name(member), **{LABEL_MEMBER: f"{kind}.{name}"}),
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": MEMBER_ROLES[member.access],
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"{USER_PREFIX}{name}"}
                    if kind == "user"
                    else {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": f"{GROUP_PREFIX}{name}"}
                ],
            }
        )
    return out


def tenant_objects(stamp: Stamp, settings: TenantSettings) -> list[Obj]:
    """The vCluster of a tenant: config Secret, ServiceAccount, the syncer's RoleBinding, Services, StatefulSet."""
    spec = stamp.spec
    for member in spec.members:
        parse_subject(member.subject)
    vc = settings.vcluster
    try:
        config = vcluster.config_yaml(spec, stamp.namespace, vc)
        pod = vcluster.pod_spec(spec, vc)
    except vcluster.VClusterSpecError as exc:
        raise SpecError(str(exc)) from None
    app = dict(vcluster.POD_LABELS)
    claim: Obj = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": vc.storage}}},
    }
    if vc.storage_class:
        claim["spec"]["storageClassName"] = vc.storage_class
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": stamp.meta(vcluster.SERVICE_ACCOUNT, **app)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": stamp.meta(vcluster.SYNCER_BINDING, **app),
            # A ClusterRole bound by a RoleBinding grants its rules in this namespace only.
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": vcluster.SYNCER_CLUSTER_ROLE,
            },
            "subjects": [{"kind": "ServiceAccount", "name": vcluster.SERVICE_ACCOUNT, "namespace": stamp.namespace}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": stamp.meta(vcluster.CONFIG_SECRET, **app),
            "type": "Opaque",
            "data": {"config.yaml": base64.b64encode(config.encode()).decode()},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": stamp.meta(CONTROL_PLANE_WORKLOAD, **app, **{"vcluster.loft.sh/service": "true"}),
            "spec": {
                "type": "ClusterIP",
                "selector": app,
                "ports": [{"name": "https", "port": 443, "targetPort": vcluster.API_PORT, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": stamp.meta(vcluster.HEADLESS_SERVICE, **app),
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": True,
                "selector": app,
                "ports": [{"name": "https", "port": 443, "targetPort": vcluster.API_PORT, "protocol": "TCP"}],
            },
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": stamp.meta(CONTROL_PLANE_WORKLOAD, **app),
            "spec": {
                "replicas": 1 if spec.state == "running" else 0,
                "serviceName": vcluster.HEADLESS_SERVICE,
                "podManagementPolicy": "Parallel",
                "selector": {"matchLabels": app},
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
                "template": {
                    "metadata": {
                        "labels": {**app, **stamp.labels()},
                        # A new configuration rolls the pod, as the chart does.
                        "annotations": {"vClusterConfigHash": vcluster.config_hash(config)},
                    },
                    "spec": pod,
                },
                "volumeClaimTemplates": [claim],
            },
        },
    ]


def desired_objects(stamp: Stamp, settings: TenantSettings) -> list[Obj]:
    """Every object of a live (running or sleeping) workload, the namespace first, in apply order.

    Raises SpecError when the spec cannot be represented (bad version, bad member subject).
    """
    if stamp.spec.state == "deleted":
        raise SpecError("a deleted workload has no objects")
    out: list[Obj] = [namespace_object(stamp)]
    if stamp.spec.kind == "tenant":
        out.extend(tenant_objects(stamp, settings))
    else:
        out.extend(member_bindings(stamp))
    for extra in (quota_object(stamp), limit_range_object(stamp), isolation_object(stamp, settings)):
        if extra is not None:
            out.append(extra)
    order = {kind: i for i, kind in enumerate(_KIND_ORDER)}
    return sorted(out, key=lambda o: order[o["kind"]])


def kinds_of(kind: WorkloadKind) -> tuple[str, ...]:
    """The kinds the agent owns inside the namespace of a ``kind`` workload."""
    return TENANT_KINDS if kind == "tenant" else SPACE_KINDS


# --- drift ----------------------------------------------------------------------------------------
def contains(actual: Any, expected: Any) -> bool:
    """Is every field of ``expected`` in ``actual`` with the same value? (The server may add defaults.)

    Lists match element by element; quantities match by value (``2048Mi`` is ``2Gi``).
    """
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping):
            return False
        return all(k in actual and contains(actual[k], v) for k, v in expected.items())
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return False
        return all(contains(a, e) for a, e in zip(actual, expected, strict=True))
    return _same_value(actual, expected)


def _same_value(actual: Any, expected: Any) -> bool:
    """Equal, or the same quantity spelled another way."""
    if actual == expected:
        return True
    if isinstance(expected, str) and isinstance(actual, str):
        try:
            return parse_quantity(actual) == parse_quantity(expected)
        except ValueError:
            return False
    return False


class ObjectKey(NamedTuple):
    """One Kubernetes object by identity (not a Tether workload: that is ``schemas.messages.WorkloadRef``)."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def object_key(obj: Mapping[str, Any]) -> ObjectKey:
    """(kind, namespace, name) of an object."""
    meta = obj.get("metadata") or {}
    return ObjectKey(str(obj.get("kind", "")), str(meta.get("namespace", "")), str(meta.get("name", "")))


def drift(expected: Iterable[Obj], actual: Mapping[ObjectKey, Obj]) -> list[str]:
    """What differs between the objects a workload should have and the ones found (empty: none).

    ``actual`` holds the owned objects found, keyed by ``object_key``. An expected
    object that is missing or changed is drift; so is an owned object that is not
    expected (in the namespaces of ``expected``).
    """
    problems = []
    wanted = set()
    namespaces = set()
    for obj in expected:
        key = object_key(obj)
        wanted.add(key)
        namespaces.add(key[2] if key[0] == "Namespace" else key[1])
        what = f"{key[0]} {key[2]}" if key[0] == "Namespace" else f"{key[0]} {key[1]}/{key[2]}"
        found = actual.get(key)
        if found is None:
            problems.append(f"{what} is missing")
        elif not contains(found, obj):
            problems.append(f"{what} was changed")
    for key in actual:
        if key not in wanted and key[0] != "Namespace" and key[1] in namespaces:
            problems.append(f"{key[0]} {key[1]}/{key[2]} is not expected")
    return problems
