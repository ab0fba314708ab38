"""What the OpenAPI document says about the API as a whole (servers, tags, contact, licence, the open route).

Kept apart from the routes: the linters in tests/clients/test_api_lint.py (redocly, with the ruleset in
tests/tools/lint/redocly.yaml) hold it to zero errors and zero warnings.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

TAGS = {
    "platform": "The platform itself: liveness of the API and the services behind it (no token needed).",
    "access": "Who you are, users, teams and API tokens. Creating and changing them is for platform admins.",
    "clusters": "Connected clusters: connect one (a one-time token and the agent's command), list, inspect, "
    "change, disconnect.",
    "projects": "Projects: their members and roles, the clusters they may use, and their quotas.",
    "tenants": "Tenant clusters (virtual clusters) of a project: create, sleep, wake, upgrade, delete.",
    "spaces": "Spaces (namespaces with RBAC) of a project: create, inspect, delete.",
    "events": "Live events for the web UI, and credentials for outside consumers of the NATS events.",
    "audit": "The audit trail: every mutating call and every command sent to an agent (platform admins).",
    "gateway": "The Kubernetes API of tenant clusters, spaces and clusters, through their agents.",
}
OPEN_PATHS = frozenset({"/healthz"})
"""Routes that need no token: their security is declared empty, not left out."""
BEARER = "HTTPBearer"
"""The one security scheme: an API token in ``Authorization: Bearer`` (read by ``auth.principal`` itself, not
by a FastAPI dependency, so it is declared here)."""
BEARER_SCHEME = {"type": "http", "scheme": "bearer"}


def describe(app: FastAPI) -> None:
    """Fill in the document-wide parts; call after every route is installed."""
    app.servers = [{"url": "/", "description": "This API, where it is served (tether up prints the address)"}]
    app.contact = {"name": "Tether maintainers"}
    app.license_info = {"name": "Apache-2.0", "identifier": "Apache-2.0"}
    used = {tag for route in app.routes if isinstance(route, APIRoute) for tag in route.tags}
    app.openapi_tags = [{"name": name, "description": TAGS.get(str(name), str(name))} for name in sorted(used, key=str)]
    build = app.openapi

    def document() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()  # FastAPI's, which keeps it in ``app.openapi_schema``
            schema.setdefault("components", {}).setdefault("securitySchemes", {})[BEARER] = dict(BEARER_SCHEME)
            for path, operations in schema.get("paths", {}).items():
                for operation in operations.values():
                    operation["security"] = [] if path in OPEN_PATHS else [{BEARER: []}]
        return app.openapi_schema or build()

    app.openapi = document  # type: ignore[method-assign]
    app.openapi_schema = None  # built on first request, with the above
