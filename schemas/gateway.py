"""The Kubernetes gateway's messages: one HTTP exchange between the API and a cluster's agent, over NATS.

A member's kubectl talks to the API; the API opens a *stream* to the agent of the
cluster the space or tenant cluster runs on, and the agent makes the call to the
Kubernetes API server as the member (impersonation). Subjects (``schemas.subjects``):

- ``tether.gw.<cluster>.req``: the API's ``GatewayRequest`` (only that cluster's agent may subscribe);
- ``tether.gw.<cluster>.ctl``: the API's ``GatewayControl`` (credits, cancel) for a stream;
- ``tether.gwr.<cluster>.<api>.<n>``: the agent's ``GatewayFrame``s for stream ``<api>.<n>`` (only that
  cluster's agent may publish under ``tether.gwr.<cluster>``; the API that opened the stream subscribes).

Flow control is per stream: the agent sends at most as many data frames as the API
granted credits (``WINDOW`` to start); the API grants more only as its client reads
them. A slow reader therefore holds back only its own stream, and neither side
buffers more than ``WINDOW`` frames of ``CHUNK`` bytes for it. Pings (no credit)
tell the API the agent is still there while a watch is quiet.

Frames are MessagePack (bodies are bytes: JSON would grow them by a third).
The policy both sides apply (which paths a space may reach, which headers pass)
lives here, pure, so that the API refuses early and the agent refuses anyway.
"""

from __future__ import annotations

import hashlib
import re
from typing import Literal

import msgspec

from schemas.errors import InvalidInput

CHUNK = 64 * 1024
"""Most bytes of body in one data frame."""
WINDOW = 16
"""Data frames the agent may send before the API grants more (per stream): 1 MiB in flight at most."""
MAX_REQUEST_BODY = 3 * 1024 * 1024 // 4
"""Largest request body carried (NATS' default max_payload is 1 MiB, with headers and framing)."""
PING_INTERVAL = 10.0
"""Seconds between the agent's pings on a quiet stream."""
IDLE_TIMEOUT = 3 * PING_INTERVAL + 5
"""Seconds without any frame after which the API gives a stream up (the agent is gone)."""
HEAD_TIMEOUT = 30.0
"""Seconds the API waits for the answer's status line (the upstream's own answer time included)."""
MAX_STREAMS = 2000
"""Open streams one agent serves at once; more are answered 429."""

Target = Literal["space", "tenant"]
FrameKind = Literal["head", "data", "end", "ping", "error", "credit"]


class GatewayRequest(msgspec.Struct, frozen=True, kw_only=True, tag="gw-request.v1"):
    """One HTTP request for the agent to make, as ``user`` with ``groups``."""

    stream: str
    """``<api>.<n>``: where the frames go (``tether.gwr.<cluster>.<stream>``)."""
    target: Target
    project: str
    name: str
    user: str
    """The member's Tether user name (the agent impersonates ``tether:user:<user>``)."""
    teams: tuple[str, ...] = ()
    """The member's teams (the agent adds ``tether:team:<team>`` groups)."""
    method: str
    path: str
    """The Kubernetes API path, e.g. ``/api/v1/namespaces/x/pods``."""
    query: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    window: int = WINDOW
    upgrade: str = ""
    """``websocket`` for exec/attach/port-forward (``schemas.gateway_streams``): a tunnel, not one exchange."""
    subprotocols: tuple[str, ...] = ()
    """The WebSocket subprotocols the client offered (those the gateway carries), in its order."""


class GatewayControl(msgspec.Struct, frozen=True, kw_only=True, tag="gw-control.v1"):
    """The API's word on one stream: more credits, or stop."""

    stream: str
    credit: int = 0
    cancel: bool = False
    seq: int = 0
    """A tunnel's input (``schemas.gateway_streams``): numbered from 1; 0 for credits, cancels and keepalives."""
    data: bytes = b""


class GatewayFrame(msgspec.Struct, frozen=True, kw_only=True, tag="gw-frame.v1"):
    """One piece of the answer: ``head`` (status and headers), ``data``, ``end``, ``ping`` or ``error``."""

    kind: FrameKind
    seq: int = 0
    status: int = 0
    headers: tuple[tuple[str, str], ...] = ()
    data: bytes = b""
    error: str = ""
    reason: str = ""
    credit: int = 0
    """A ``credit`` frame (tunnels): how many more input frames the API may send the agent."""
    last: bool = False
    """A ``head`` frame that carries the whole body in ``data``: no data or end frames follow."""


GatewayMessage = GatewayRequest | GatewayControl | GatewayFrame

_encoder = msgspec.msgpack.Encoder()
_decoder: msgspec.msgpack.Decoder[GatewayMessage] = msgspec.msgpack.Decoder(GatewayMessage)


def encode(message: GatewayMessage) -> bytes:
    return _encoder.encode(message)


def decode(data: bytes) -> GatewayMessage:
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise InvalidInput(f"not a gateway message: {exc}") from None


# --- what passes --------------------------------------------------------------------------------------
_STREAM_ID = re.compile(r"^[a-z0-9]{1,32}\.[0-9]{1,18}$")


def check_stream_id(stream: str) -> str:
    if not _STREAM_ID.match(stream):
        raise InvalidInput(f"invalid gateway stream id {stream!r}")
    return stream


HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
REQUEST_HEADERS = frozenset({"accept", "content-type", "user-agent", "kubectl-command", "kubectl-session"})
"""Request headers passed upstream; everything else (credentials, ``Impersonate-*``, encodings) stays here."""
RESPONSE_DROP = HOP_BY_HOP | {"content-encoding", "audit-id", "x-kubernetes-pf-flowschema-uid"}


def impersonation_headers(headers: list[tuple[str, str]]) -> list[str]:
    """Names of the client's ``Impersonate-*`` headers (refused: the gateway decides who the caller is)."""
    return [k for k, _ in headers if k.lower().startswith("impersonate-")]


def request_headers(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in headers if k.lower() in REQUEST_HEADERS)


def response_headers(headers: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((k.lower(), v) for k, v in headers if k.lower() not in RESPONSE_DROP)


DISCOVERY = re.compile(
    r"^/(version|api|apis|openapi/v2|openapi/v3(/.*)?|api/v1|apis/[a-z0-9.-]+|apis/[a-z0-9.-]+/[a-z0-9]+)/?$"
)
_SEGMENT = re.compile(r"^[A-Za-z0-9._:-]+$")
SELF_REVIEWS = re.compile(
    r"^/apis/(authorization\.k8s\.io/v1/(selfsubjectaccessreviews|selfsubjectrulesreviews)"
    r"|authentication\.k8s\.io/v1/selfsubjectreviews)$"
)
"""``kubectl auth can-i`` (``--list``) and ``kubectl auth whoami``: the member asks what they themselves may do, as
any authenticated user may (ClusterRole ``system:basic-user``); the answer is about the impersonated member only,
never about objects or other subjects (``subjectaccessreviews`` about anyone stays refused)."""


def clean_path(path: str) -> str:
    """``path`` if it is a plain absolute path (no ``.``/``..``/empty segments, no escapes); else InvalidInput."""
    if not path.startswith("/") or len(path) > 2048:
        raise InvalidInput("invalid Kubernetes API path")
    segments = path.strip("/").split("/") if path != "/" else []
    for seg in segments:
        if seg in ("", ".", "..") or not _SEGMENT.match(seg):
            raise InvalidInput(f"invalid Kubernetes API path {path[:200]!r}")
    return path


def space_path_refusal(method: str, path: str, namespace: str) -> str | None:
    """Why a space's member may not reach ``path`` (None: they may; Kubernetes RBAC decides the rest).

    A space is one namespace: its own objects (``.../namespaces/<ns>/...``) and the namespace itself,
    plus read-only discovery (``/api``, ``/apis``, ``/version``, OpenAPI).
    """
    clean_path(path)
    if DISCOVERY.match(path):
        return None if method in ("GET", "HEAD") else f"{method} {path} is not allowed through a space"
    if SELF_REVIEWS.match(path):
        return None if method == "POST" else f"{method} {path} is not allowed through a space"
    core = re.match(r"^/api/v1/namespaces/([^/]+)(/.*)?$", path)
    grouped = re.match(r"^/apis/[^/]+/[^/]+/namespaces/([^/]+)(/.*)?$", path)
    found = core or grouped
    if found is None:
        return f"a space reaches only its namespace {namespace!r}: {path} is outside it"
    if found.group(1) != namespace:
        return f"a space reaches only its namespace {namespace!r}, not {found.group(1)!r}"
    if found.group(2) is None and core is None:
        return f"{path} is outside the namespace"
    return None


def space_namespace(project: str, name: str) -> str:
    """A space's namespace, as the agent names it (``agent.drivers.kube_objects.namespace_name``; a unit test
    keeps the two equal): kubeconfigs preset it."""
    base = f"tether-{project}-{name}"
    if len(base) <= 63:
        return base
    digest = hashlib.sha256(f"space/{project}/{name}".encode()).hexdigest()[:10]
    return f"{base[: 63 - len(digest) - 1].rstrip('-')}-{digest}"


def gateway_path(target: str, project: str, name: str) -> str:
    """The API path kubectl's server URL ends with for one space or tenant cluster."""
    return f"/kubernetes/project/{project}/{target}/{name}"
