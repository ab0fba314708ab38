"""HTTP client for the API, turning error replies into messages people can act on."""

from __future__ import annotations

import os
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


def _verify() -> ssl.SSLContext | bool:
    """``$TETHER_CA_FILE``: the CA of an API whose HTTPS certificate a private CA signed."""
    ca = os.environ.get("TETHER_CA_FILE")
    return ssl.create_default_context(cafile=ca) if ca else True


class Client:
    def __init__(self, ctx: Context, timeout: float = 15.0) -> None:
        self.ctx = ctx
        self.http = httpx.Client(
            base_url=ctx.server,
            timeout=timeout,
            headers={"Authorization": f"Bearer {ctx.token}"},
            verify=_verify(),
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
