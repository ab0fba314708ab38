"""HTTP client for the API, turning error replies into messages people can act on."""

from __future__ import annotations

import ssl
from typing import Any

import httpx

from services.cli.config import Context


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


class Client:
    def __init__(self, ctx: Context, timeout: float = 15.0) -> None:
        self.ctx = ctx
        self.http = httpx.Client(
            base_url=ctx.server,
            timeout=timeout,
            headers={"Authorization": f"Bearer {ctx.token}"},
            verify=verify_with(ctx),
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(0, f"cannot reach the Tether API at {self.ctx.server}: {exc}") from None
        if resp.status_code >= 400:
            try:
                message = resp.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = resp.text or resp.reason_phrase
            raise ApiError(resp.status_code, _explain(resp.status_code, message))
        return resp.json() if resp.content else None

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)
