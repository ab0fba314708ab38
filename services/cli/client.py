"""HTTP client for the API, turning error replies into messages people can act on."""

from __future__ import annotations

import ssl
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from schemas.errors import parse_retry_after
from services.cli.config import Context

PATIENCE = 20.0
"""Seconds a read keeps asking again while the API answers "try again" (503 or 429 with ``Retry-After``): a
JetStream stream that lost its leader's node elects another in 4-9 s, and a list in the meantime is a 503."""
MIN_WAIT = 0.5
"""The shortest: a "Retry-After: 0" is not asked again at once, in a loop."""
MAX_WAIT = 5.0
"""The longest single wait a ``Retry-After`` gets, whatever it says."""


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _explain(status: int, message: str) -> str:
    if status == 401:
        return f"not authenticated: {message} (log in again with 'tether login')"
    if status == 403:
        return f"permission denied: {message}"
    return message


def verify_with(ctx: Context) -> ssl.SSLContext | bool:
    """The context's CA (``tether up``'s own, ``--ca-file`` of ``tether login``, ``$TETHER_CA_FILE``), only it;
    else the system's trusted CAs. A CA that cannot be read is an ``ApiError`` saying which file."""
    if not ctx.ca_file:
        return True
    try:
        return ssl.create_default_context(cafile=ctx.ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ApiError(0, f"cannot use the CA file {ctx.ca_file} of the API at {ctx.server}: {exc}") from None


def retry_after(resp: httpx.Response) -> float | None:
    """Seconds to wait before asking again, when the answer says to (503 or 429 with ``Retry-After`` in
    seconds), capped at ``MAX_WAIT``; else None."""
    header = resp.headers.get("Retry-After")
    if resp.status_code not in (429, 503) or header is None:
        return None
    return min(max(parse_retry_after(header), MIN_WAIT), MAX_WAIT)  # NaN or not a number: its default, 1 s


def _message(resp: httpx.Response) -> str:
    try:
        return str(resp.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return resp.text or resp.reason_phrase


class Client:
    def __init__(
        self,
        ctx: Context,
        timeout: float = 15.0,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        notice: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
    ) -> None:
        self.ctx = ctx
        self.http = httpx.Client(
            base_url=ctx.server,
            timeout=timeout,
            headers={"Authorization": f"Bearer {ctx.token}"},
            verify=verify_with(ctx),
            transport=transport,
        )
        self._sleep, self._notice = sleep, notice

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = self._send(method, path, **kwargs)
        if method == "GET":
            # A read changes nothing: asked again while the API says when (a write is left to the person, who
            # knows whether to repeat it).
            waited = 0.0
            while (wait := retry_after(resp)) is not None and waited + wait <= PATIENCE:
                if not waited:
                    self._notice(f"the API says to try again ({_message(resp)}); asking again for up to {PATIENCE:g}s")
                self._sleep(wait)
                waited += wait
                resp = self._send(method, path, **kwargs)
        if resp.status_code >= 400:
            raise ApiError(resp.status_code, _explain(resp.status_code, _message(resp)))
        return resp.json() if resp.content else None

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the Tether API at {self.ctx.server}: {exc}") from None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
