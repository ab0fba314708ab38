"""The tunnel rules both sides of the gateway apply (``schemas.gateway_streams``), without I/O."""

from __future__ import annotations

from schemas.gateway_streams import carried_subprotocols, offered_subprotocols, spdy_refusal, split_message


def test_only_the_binary_kubernetes_subprotocols_are_carried_in_the_clients_order() -> None:
    offered = offered_subprotocols(
        "v5.channel.k8s.io, v4.channel.k8s.io, base64.channel.k8s.io, channel.k8s.io, chat, SPDY/3.1+portforward.k8s.io"
    )
    assert carried_subprotocols(offered) == (
        "v5.channel.k8s.io",
        "v4.channel.k8s.io",
        "channel.k8s.io",
        "SPDY/3.1+portforward.k8s.io",
    )
    assert carried_subprotocols(["v4.portforward.k8s.io", "portforward.k8s.io"]) == (
        "v4.portforward.k8s.io",
        "portforward.k8s.io",
    )
    assert carried_subprotocols(["x"] * 3 + ["v5.channel.k8s.io"] * 20) == ("v5.channel.k8s.io",) * 8


def test_a_large_channel_message_splits_into_messages_of_the_same_channel() -> None:
    message = b"\x01" + bytes(range(256)) * 40  # 10,241 bytes on stdout
    pieces = list(split_message(message, "v5.channel.k8s.io", chunk=1000))
    assert all(len(p) <= 1000 and p[:1] == b"\x01" for p in pieces)
    assert b"".join(p[1:] for p in pieces) == message[1:]
    assert list(split_message(b"\x02abc", "v5.channel.k8s.io", chunk=1000)) == [b"\x02abc"]


def test_the_spdy_tunnel_is_a_byte_stream_split_anywhere() -> None:
    message = bytes(range(256)) * 10
    pieces = list(split_message(message, "SPDY/3.1+portforward.k8s.io", chunk=1000))
    assert [len(p) for p in pieces] == [1000, 1000, 560]
    assert b"".join(pieces) == message


def test_an_spdy_client_is_told_which_kubectl_it_needs() -> None:
    text = spdy_refusal("SPDY/3.1")
    assert "kubectl 1.31 or newer" in text and "WebSocket" in text
