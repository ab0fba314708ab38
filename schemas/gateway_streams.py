"""Tunnels through the Kubernetes gateway: exec, attach, cp and port-forward over WebSocket.

kubectl 1.30+ runs exec/attach/cp over a WebSocket with the subprotocol ``v5.channel.k8s.io``
(falling back to ``v4``..``channel.k8s.io``); kubectl 1.31+ tunnels port-forward's SPDY framing
inside a WebSocket (``SPDY/3.1+portforward.k8s.io``). The gateway carries them as *tunnels*:

- the API accepts the client's WebSocket only once the agent's own WebSocket to the Kubernetes
  API server is up (``GatewayRequest.upgrade == "websocket"``; the head frame's status is 101 and
  names the subprotocol the API server chose), so the client sees the API server's answer, a
  refusal included, as it would see it directly;
- each WebSocket message travels as one frame; a large one is split (``split_message``) so that
  no frame carries more than ``CHUNK`` bytes: with a channel protocol every piece keeps the
  message's channel byte, with the SPDY tunnel the bytes are a plain stream;
- agent -> API: ``data`` frames under the stream's credits (as for any answer);
  API -> agent: ``GatewayControl`` with ``seq`` and ``data``, at most ``INPUT_WINDOW`` unacknowledged;
  the agent returns ``credit`` frames as it writes them upstream. Each direction holds at most
  one window per stream, so a slow reader or writer stalls its own tunnel and nothing else;
- the API sends a keepalive control every ``PING_INTERVAL``; an agent that hears nothing from
  the API for ``IDLE_TIMEOUT`` ends the tunnel (the API went away without a word).

Pure: both sides apply the same rules.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from schemas.gateway import CHUNK, WINDOW

INPUT_WINDOW = WINDOW
"""Input frames the API may send the agent for one tunnel before the agent grants more."""
MAX_MESSAGE = 16 * 1024 * 1024
"""Largest WebSocket message either side accepts (kubectl's own are 32 KiB)."""
WEBSOCKET_KUBECTL = "1.31"
"""The oldest kubectl that speaks WebSocket for all of exec, attach, cp and port-forward."""

_CHANNEL = re.compile(r"^(v[0-9]{1,2}\.)?channel\.k8s\.io$")
_PORTFORWARD = re.compile(r"^(v[0-9]{1,2}\.)?portforward\.k8s\.io$")
_SPDY_TUNNEL = re.compile(r"^SPDY/3\.1\+(v[0-9]{1,2}\.)?portforward\.k8s\.io$")
MAX_SUBPROTOCOLS = 8


def carried_subprotocols(offered: list[str]) -> tuple[str, ...]:
    """The client's subprotocols the gateway can carry, in the client's order.

    The binary channel protocols and the SPDY tunnel; not the ``base64.*`` ones (text
    messages, which no kubectl sends)."""
    kept = [p for p in offered if _CHANNEL.match(p) or _PORTFORWARD.match(p) or _SPDY_TUNNEL.match(p)]
    return tuple(kept[:MAX_SUBPROTOCOLS])


def offered_subprotocols(header: str) -> list[str]:
    """The ``Sec-WebSocket-Protocol`` header's names."""
    return [p.strip() for p in header.split(",") if p.strip()]


def is_stream_protocol(subprotocol: str) -> bool:
    """True when message boundaries carry no meaning (the SPDY tunnel is a byte stream)."""
    return bool(_SPDY_TUNNEL.match(subprotocol))


def split_message(message: bytes, subprotocol: str, chunk: int = CHUNK) -> Iterator[bytes]:
    """``message`` as pieces of at most ``chunk`` bytes that mean the same to the receiver.

    A channel protocol's message is ``<channel byte><data>``: each piece repeats the channel byte."""
    if len(message) <= chunk:
        yield message
        return
    if is_stream_protocol(subprotocol):
        for start in range(0, len(message), chunk):
            yield message[start : start + chunk]
        return
    channel, body = message[:1], memoryview(message)[1:]
    for start in range(0, len(body), chunk - 1):
        yield channel + body[start : start + chunk - 1]


def spdy_refusal(upgrade: str) -> str:
    """What an SPDY-only client is told."""
    return (
        f"this client asked for {upgrade!r} (SPDY), which the Tether gateway does not carry: exec, attach, cp and "
        f"port-forward need kubectl {WEBSOCKET_KUBECTL} or newer, which speaks WebSocket (v5.channel.k8s.io, "
        f"port-forward over WebSocket)"
    )
