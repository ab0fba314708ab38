"""Routes of the platform's clusters (connect, list, get, disconnect), with whoami and the tenant versions.

Removing and updating a cluster: ``routes_records``.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI

from schemas import subjects, versions
from schemas.api import ClusterConnectIn, ClusterConnectOut, ClusterListOut, ClusterOut, VersionsOut, WhoAmIOut
from schemas.errors import NotFound
from schemas.messages import (
    ClusterConnectInfo,
    ClusterCreate,
    ClusterList,
    ClusterRecord,
    Empty,
    NameRequest,
    PresenceList,
)
from schemas.names import check_name
from services.api import logic, manifests
from services.api.auth import ERRORS, Platform, Who, cluster_scope, require_admin


def install_cluster_routes(app: FastAPI, platform: Platform) -> None:
    @app.get("/api/v1/versions", response_model=VersionsOut, responses=ERRORS, tags=["tenants"])
    async def tenant_versions(who: Who) -> VersionsOut:
        """The Kubernetes versions a tenant cluster may run (create and upgrade are checked against them)."""
        return VersionsOut(
            versions=versions.supported_versions(),
            default=versions.DEFAULT_VERSION,
            upgrade=versions.UPGRADE_RULE,
            engine=versions.TENANT_ENGINE,
        )

    @app.get("/api/v1/whoami", response_model=WhoAmIOut, responses=ERRORS, tags=["access"])
    async def whoami(who: Who) -> WhoAmIOut:
        return WhoAmIOut(user=who.user, platform_admin=who.platform_admin)

    @app.get("/api/v1/clusters", response_model=ClusterListOut, responses=ERRORS, tags=["clusters"])
    async def list_clusters(who: Who) -> ClusterListOut:
        records, presence, scope = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_LIST, Empty(), ClusterList),
            platform.call(subjects.Health.PRESENCE_LIST, Empty(), PresenceList),
            cluster_scope(platform, who),
        )
        by_name = {p.cluster: p for p in presence.items}
        return ClusterListOut(
            items=[
                logic.cluster_view(r, by_name.get(r.name), scope)
                for r in records.clusters
                if logic.may_see_cluster(scope, r)
            ]
        )

    @app.get("/api/v1/clusters/{name}", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def get_cluster(name: str, who: Who) -> ClusterOut:
        check_name(name, "cluster name")
        record, presence, scope = await asyncio.gather(
            platform.call(subjects.Registry.CLUSTER_GET, NameRequest(name=name), ClusterRecord),
            platform.presence(name),
            cluster_scope(platform, who),
        )
        if not logic.may_see_cluster(scope, record):
            raise NotFound(f"cluster {name!r} not found")  # its existence is not the caller's business either
        return logic.cluster_view(record, presence, scope)

    @app.post(
        "/api/v1/clusters",
        response_model=ClusterConnectOut,
        status_code=201,
        responses=ERRORS,
        tags=["clusters"],
    )
    async def connect_cluster(body: ClusterConnectIn, who: Who) -> ClusterConnectOut:
        require_admin(who)
        info = await platform.call(
            subjects.Registry.CLUSTER_CREATE,
            ClusterCreate(
                name=body.name,
                display_name=body.display_name,
                description=body.description,
                labels=body.labels,
                local=body.local,
                token_ttl=body.token_ttl,
                rotate_token=body.rotate_token,
            ),
            ClusterConnectInfo,
        )
        return ClusterConnectOut(
            cluster=logic.cluster_view(info.cluster, None),
            token=info.token,
            expires_at=logic.ts(info.expires_at),  # type: ignore[arg-type]
            nats_url=platform.nats_url,
            agent_command=logic.agent_command(platform.nats_url, info.token, platform.ca_file),
            manifests=manifests.render(
                cluster=info.cluster.name,
                token=info.token,
                server=platform.nats_url,
                ca_pem=manifests.read_ca(platform.ca_file),
            ),
        )

    @app.post("/api/v1/clusters/{name}/disconnect", response_model=ClusterOut, responses=ERRORS, tags=["clusters"])
    async def disconnect_cluster(name: str, who: Who) -> ClusterOut:
        require_admin(who)
        check_name(name, "cluster name")
        record = await platform.call(subjects.Registry.CLUSTER_DISCONNECT, NameRequest(name=name), ClusterRecord)
        return logic.cluster_view(record, await platform.presence(name))
