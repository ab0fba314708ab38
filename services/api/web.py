"""The web UI (static files at ``/``) and the read-only routes it needs beyond the REST API.

- ``GET /`` serves the single-page UI; ``/ui/*`` its static files (no build step, nothing from a CDN).
- ``GET /api/v1/events/stream`` relays the public events (``tether.events.>``) as server-sent events,
  filtered to what the caller may see. It takes the usual ``Authorization`` header (the UI reads it
  with a streaming ``fetch``), so a token never appears in a URL.
- ``GET /api/v1/clusters/{name}/events`` reads one cluster's online/offline history back from the
  ``EVENTS`` stream (``Bus.read_since``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from schemas import subjects
from schemas.api import ClusterEventListOut, ClusterEventOut
from schemas.errors import NotFound, TetherError, Unavailable
from schemas.messages import ClusterEvent, ClusterList, ClusterRecord, Empty, NameRequest, Principal, VisibleProjects
from schemas.names import check_name
from services.api.auth import ERRORS, Platform, Who, cluster_scope, platform_of, visible
from services.api.logic import may_see_cluster
from services.bus import Delivery

logger = logging.getLogger(__name__)

UI_DIR = Path(__file__).resolve().parent / "ui"
EVENT_PREFIX = subjects.public_event("")
KEEPALIVE = 15.0
"""Seconds between SSE comments that keep idle connections (and proxies) open."""
VISIBILITY_TTL = 10.0
"""Seconds a stream trusts its copy of the caller's visible projects."""
QUEUE_LIMIT = 2000
HISTORY_SCAN_LIMIT = 50_000
"""Cluster events read at most per history request (every cluster's events share the subjects)."""

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)

router = APIRouter()


# --- pure rules -------------------------------------------------------------------------------
def may_see(event: dict[str, Any], who: Principal, seen: VisibleProjects, clusters: set[str] | None = None) -> bool:
    """May ``who`` receive this public event? A cluster's events to members of the projects that may use it
    (``clusters``: their names, None: all); project events to the project's members; anything else
    (unknown kinds) to platform admins only."""
    if who.platform_admin:
        return True
    if event.get("type") == "cluster-event.v1":
        return clusters is None or event.get("cluster") in clusters
    project = event.get("project")
    if isinstance(project, str) and project:
        return seen.all or project in seen.projects
    return False


def sse(kind: str, data: str) -> bytes:
    """One server-sent event (``data`` is one line of JSON)."""
    return f"event: {kind}\ndata: {data}\n\n".encode()


def cluster_history(events: list[ClusterEvent], cluster: str, limit: int) -> tuple[list[ClusterEventOut], bool]:
    """The last ``limit`` events of ``cluster`` (newest first) and whether older ones were dropped."""
    kept: deque[ClusterEventOut] = deque(maxlen=limit)
    total = 0
    for event in events:
        if event.cluster != cluster:
            continue
        total += 1
        kept.append(ClusterEventOut(kind=event.kind, at=datetime.fromtimestamp(event.at, UTC), reason=event.reason))
    return list(reversed(kept)), total > len(kept)


# --- routes -----------------------------------------------------------------------------------
@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(
        UI_DIR / "index.html",
        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get(
    "/api/v1/events/stream",
    responses={
        **ERRORS,
        200: {
            "description": "Server-sent events: `event: <kind>` (e.g. `cluster.online`, `tenant.sleeping`) with "
            "the event's JSON as `data`; first `event: ready`; `event: resync` when events were dropped.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        },
    },
    response_class=StreamingResponse,
    tags=["events"],
    summary="Live public events the caller may see (server-sent events)",
)
async def event_stream(request: Request, who: Who) -> StreamingResponse:
    platform = platform_of(request)
    seen = await visible(platform, who)
    return StreamingResponse(
        _relay(platform, who, seen),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _relay(platform: Platform, who: Principal, seen: VisibleProjects) -> AsyncIterator[bytes]:
    queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(maxsize=QUEUE_LIMIT)
    dropped = False

    async def on_event(d: Delivery) -> None:
        nonlocal dropped
        try:
            queue.put_nowait((d.subject, d.data))
        except asyncio.QueueFull:
            dropped = True

    sub = await platform.bus.subscribe(subjects.PUBLIC_EVENTS_ANY, on_event)
    clusters_at = time.time()
    clusters = await _visible_clusters(platform, who)
    fetched = time.monotonic()
    try:
        yield b"retry: 2000\n\n" + sse("ready", json.dumps({"user": who.user}))
        while True:
            try:
                subject, data = await asyncio.wait_for(queue.get(), KEEPALIVE)
            except TimeoutError:
                yield b": keepalive\n\n"
                continue
            if dropped:
                dropped = False
                while not queue.empty():
                    queue.get_nowait()
                yield sse("resync", "{}")
                continue
            try:
                event = json.loads(data)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            kind = subject.removeprefix(EVENT_PREFIX)
            stale = time.monotonic() - fetched > VISIBILITY_TTL
            if not who.platform_admin and (stale or event.get("type") == "membership-changed.v1"):
                with contextlib.suppress(Exception):
                    seen = await visible(platform, who)
                    clusters_at = time.time()
                    clusters = await _visible_clusters(platform, who)
                    fetched = time.monotonic()
            if clusters is not None and _news_of_a_cluster(event, clusters, clusters_at):
                with contextlib.suppress(Exception):
                    clusters_at = time.time()
                    clusters = await _visible_clusters(platform, who)
            if may_see(event, who, seen, clusters):
                yield sse(kind, json.dumps(event, separators=(",", ":")))
    finally:
        with contextlib.suppress(Exception):
            await sub.stop()


def _news_of_a_cluster(event: dict[str, Any], clusters: set[str], listed_at: float) -> bool:
    """Is ``event`` about a cluster the list read at ``listed_at`` could not know (registered since, or
    changed after a while)? Then the list is read again before the event is judged."""
    if event.get("type") != "cluster-event.v1" or event.get("cluster") in clusters:
        return False
    at = event.get("at")
    if not isinstance(at, int | float) or at <= listed_at:
        return False
    return event.get("kind") == "registered" or at - listed_at > 5.0


async def _visible_clusters(platform: Platform, who: Principal) -> set[str] | None:
    """Names of the clusters ``who`` may see (None: all, for platform admins)."""
    scope = await cluster_scope(platform, who)
    if scope is None:
        return None
    if not scope:
        return set()
    listed = await platform.call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList)
    return {c.name for c in listed.clusters if may_see_cluster(scope, c)}


@router.get(
    "/api/v1/clusters/{name}/events",
    response_model=ClusterEventListOut,
    responses=ERRORS,
    tags=["clusters"],
    summary="A cluster's recent transitions (registered, connected, online, offline, disconnected)",
)
async def cluster_events(
    request: Request,
    name: str,
    who: Who,
    limit: Annotated[int, Query(ge=1, le=1000, description="At most this many, newest first")] = 100,
    hours: Annotated[float, Query(gt=0, le=168, description="How far back to look")] = 24.0,
) -> ClusterEventListOut:
    check_name(name, "cluster name")
    platform = platform_of(request)
    record = await platform.call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord)  # 404
    if not may_see_cluster(await cluster_scope(platform, who), record):
        raise NotFound(f"cluster {name!r} not found")
    since = datetime.fromtimestamp(time.time() - hours * 3600, UTC)
    raw, capped = await _read_cluster_events(platform, since)
    items, truncated = cluster_history(raw, name, limit)
    return ClusterEventListOut(items=items, since=since, truncated=truncated or capped)


async def _read_cluster_events(platform: Platform, since: datetime) -> tuple[list[ClusterEvent], bool]:
    """Every cluster event since ``since``, oldest first (at most ``HISTORY_SCAN_LIMIT``: then True)."""
    try:
        events = await platform.bus.read_since(
            subjects.EVENTS_STREAM, subjects.public_event("cluster.*"), since, ClusterEvent, limit=HISTORY_SCAN_LIMIT
        )
    except TetherError:
        raise
    except Exception as exc:
        raise Unavailable(f"cluster history is not available: {exc}") from None
    capped = len(events) >= HISTORY_SCAN_LIMIT
    if capped:
        logger.warning("cluster history read capped at %d events (a shorter window reads the newest)", len(events))
    return events, capped


def install_web(app: FastAPI) -> None:
    """Add the UI and its routes to ``app``."""
    app.include_router(router)
    app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
