"""The gateway's pure policy: which paths a space reaches, which headers pass, how frames encode."""

from __future__ import annotations

import pytest

from agent.drivers.kube_objects import namespace_name
from schemas.errors import InvalidInput
from schemas.gateway import (
    GatewayFrame,
    GatewayRequest,
    clean_path,
    decode,
    encode,
    impersonation_headers,
    request_headers,
    response_headers,
    space_namespace,
    space_path_refusal,
)

NS = "tether-demo-s1"


@pytest.mark.parametrize(
    "method,path",
    [
        ("GET", "/api"),
        ("GET", "/apis"),
        ("GET", "/version"),
        ("GET", "/api/v1"),
        ("GET", "/apis/apps/v1"),
        ("GET", "/openapi/v3/apis/apps/v1"),
        ("GET", "/openapi/v2"),
        ("GET", f"/api/v1/namespaces/{NS}"),
        ("GET", f"/api/v1/namespaces/{NS}/configmaps"),
        ("DELETE", f"/api/v1/namespaces/{NS}/configmaps/c1"),
        ("PATCH", f"/apis/apps/v1/namespaces/{NS}/deployments/web/scale"),
        ("GET", f"/api/v1/namespaces/{NS}/pods/p/log"),
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"),  # kubectl auth can-i
        ("POST", "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"),  # kubectl auth can-i --list
        ("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews"),  # kubectl auth whoami
    ],
)
def test_a_space_reaches_its_namespace_and_discovery(method: str, path: str) -> None:
    assert space_path_refusal(method, path, NS) is None


@pytest.mark.parametrize(
    "method,path,why",
    [
        ("GET", "/api/v1/namespaces/default/configmaps", "not 'default'"),
        ("GET", "/api/v1/pods", "outside it"),
        ("GET", "/api/v1/namespaces", "outside it"),
        ("GET", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "outside it"),
        ("GET", "/apis/apps/v1/namespaces/kube-system/deployments", "not 'kube-system'"),
        ("POST", "/api/v1", "not allowed"),
        ("GET", "/api/v1/nodes", "outside it"),
        ("GET", "/apis/apps/v1/namespaces/" + NS, "outside the namespace"),
        ("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", "outside it"),  # about anyone: no
        ("GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "not allowed"),
    ],
)
def test_a_space_reaches_nothing_else(method: str, path: str, why: str) -> None:
    refusal = space_path_refusal(method, path, NS)
    assert refusal is not None and why in refusal


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/namespaces/{NS}/../default/configmaps",
        f"/api/v1/namespaces/{NS}//configmaps",
        "/api/v1/namespaces/a%2Fb/pods",
        "api/v1",
        "/api/v1/namespaces/x/pods?watch=1",
    ],
)
def test_paths_with_tricks_are_refused(path: str) -> None:
    with pytest.raises(InvalidInput):
        clean_path(path)


def test_headers_that_pass_and_those_that_do_not() -> None:
    sent = [
        ("Authorization", "Bearer secret"),
        ("Impersonate-User", "admin"),
        ("impersonate-group", "system:masters"),
        ("Accept", "application/json"),
        ("Content-Type", "application/apply-patch+yaml"),
        ("Accept-Encoding", "gzip"),
        ("Connection", "Upgrade"),
    ]
    assert impersonation_headers(sent) == ["Impersonate-User", "impersonate-group"]
    assert request_headers(sent) == (("accept", "application/json"), ("content-type", "application/apply-patch+yaml"))
    got = response_headers([("Content-Type", "application/json"), ("Transfer-Encoding", "chunked"), ("Warning", "x")])
    assert got == (("content-type", "application/json"), ("warning", "x"))


def test_frames_round_trip_and_garbage_is_refused() -> None:
    frame = GatewayFrame(kind="data", seq=3, data=b"\x00\xff" * 10)
    assert decode(encode(frame)) == frame
    req = GatewayRequest(stream="abc.1", target="space", project="p", name="s", user="bob", method="GET", path="/api")
    assert decode(encode(req)) == req
    with pytest.raises(InvalidInput):
        decode(b"\x93garbage")


@pytest.mark.parametrize("project,name", [("demo", "s1"), ("p" * 40, "s" * 40), ("a", "b" * 63)])
def test_kubeconfig_namespace_is_the_agents(project: str, name: str) -> None:
    assert space_namespace(project, name) == namespace_name("space", project, name)
