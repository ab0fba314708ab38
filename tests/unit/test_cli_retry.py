"""The CLI's client asks a read again while the API says when (503 or 429 with ``Retry-After``), within its
patience, and never repeats a write (pure: the API is a stand-in transport, the waits are recorded)."""

from __future__ import annotations

import httpx
import pytest

from services.cli.client import MAX_WAIT, MIN_WAIT, PATIENCE, ApiError, Client
from services.cli.config import Context

UNAVAILABLE = {"error": {"code": "503", "message": "lifecycle: NATS did not answer in time; try again"}}


def _client(answers: list[httpx.Response]) -> tuple[Client, list[str], list[float]]:
    asked: list[str] = []
    waits: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.method)
        return answers.pop(0) if len(answers) > 1 else answers[0]

    client = Client(
        Context(server="http://tether.test", token="t"), transport=httpx.MockTransport(answer), sleep=waits.append
    )
    return client, asked, waits


def _unavailable(retry_after: str | None = "1") -> httpx.Response:
    return httpx.Response(503, json=UNAVAILABLE, headers={"Retry-After": retry_after} if retry_after else {})


def test_a_list_during_an_election_is_asked_again_until_it_answers() -> None:
    client, asked, waits = _client([_unavailable(), _unavailable(), httpx.Response(200, json={"items": []})])
    assert client.get("/api/v1/tenants") == {"items": []}
    assert asked == ["GET"] * 3
    assert waits == [1.0, 1.0]


def test_a_read_gives_up_after_its_patience_with_the_api_s_reason() -> None:
    client, asked, waits = _client([_unavailable("4")])
    with pytest.raises(ApiError) as err:
        client.get("/api/v1/tenants")
    assert err.value.status == 503 and "try again" in err.value.message
    assert sum(waits) <= PATIENCE and len(asked) == len(waits) + 1 == int(PATIENCE // 4) + 1


def test_waits_are_bounded_whatever_the_header_says() -> None:
    answers = [_unavailable("3600"), _unavailable("0"), _unavailable("nan"), httpx.Response(200, json={})]
    client, _, waits = _client(answers)
    client.get("/api/v1/clusters")
    assert waits == [MAX_WAIT, MIN_WAIT, 1.0]


def test_a_write_or_an_answer_without_retry_after_is_not_repeated() -> None:
    client, asked, waits = _client([_unavailable()])
    with pytest.raises(ApiError):
        client.post("/api/v1/projects/p1/tenants", json={"name": "t1"})
    client, asked_get, _ = _client([_unavailable(None)])
    with pytest.raises(ApiError):
        client.get("/api/v1/tenants")
    assert (asked, asked_get, waits) == (["POST"], ["GET"], [])
