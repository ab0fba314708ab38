"""What ``tether up`` asks, over HTTP, of the API it has just started: whether it is up yet, and a connect token
for the local cluster's agent."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from services.platform.children import Child
from services.platform.endpoint import ApiEndpoint
from services.platform.errors import PlatformError


async def wait_healthy(endpoint: ApiEndpoint, children: Sequence[Child], timeout: float = 60.0) -> None:
    """Until the API answers ``/healthz``; a child that exits meanwhile fails the start at once (its log says
    why) instead of after the whole timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    async with httpx.AsyncClient(base_url=endpoint.url, timeout=2, verify=endpoint.verify()) as http:
        while time.monotonic() < deadline:
            for child in children:
                if child.proc and child.proc.returncode is not None:
                    raise PlatformError(f"{child.name} exited during start; see {child.log}")
            try:
                resp = await http.get("/healthz")
                if resp.status_code == 200:
                    return
                last = resp.text
            except httpx.HTTPError as exc:
                last = str(exc)
            await asyncio.sleep(0.2)
    raise PlatformError(f"platform not healthy within {timeout:g}s: {last}")


async def local_agent_token(endpoint: ApiEndpoint, admin_token: str, agent_state: Path) -> str | None:
    """A connect token for cluster ``local``, or None when its agent already has credentials."""
    if (agent_state / "credentials.json").exists():
        return None
    headers = {"Authorization": f"Bearer {admin_token}"}
    async with httpx.AsyncClient(base_url=endpoint.url, timeout=10, headers=headers, verify=endpoint.verify()) as http:
        body = {
            "name": "local",
            "display_name": "Platform cluster",
            "local": True,
            "description": "The cluster the platform runs on",
            "rotate_token": True,  # a local cluster registered before but never connected: a new token
        }
        resp = await http.post("/api/v1/clusters", json=body)
        if resp.status_code == 409:
            # Connected before, but its credentials are gone (state dir wiped): start over.
            await http.post("/api/v1/clusters/local/disconnect")
            resp = await http.post("/api/v1/clusters", json=body)
        resp.raise_for_status()
        return str(resp.json()["token"])
