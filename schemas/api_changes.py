"""The HTTP API's models for changing and removing records (users, tokens, teams, projects, clusters)."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from schemas.api import MAX_LIST, ApiModel, Labels, NameIn, QuotaModel


class RemovedOut(ApiModel):
    kind: str
    name: str
    took: list[str] = Field(default_factory=list, description="What went with it")


class TokenIn(ApiModel):
    name: str = Field("", max_length=200, description="What the token is for")
    ttl: float = Field(
        0, ge=0, le=5 * 365 * 24 * 3600, allow_inf_nan=False, description="Seconds it stays valid; 0: until revoked"
    )


class TokenOut(ApiModel):
    id: str = Field(description="The first 12 hex digits of the token's SHA-256")
    user: str
    name: str
    created_at: datetime | None
    expires_at: datetime | None = Field(description="None: never")


class TokenListOut(ApiModel):
    items: list[TokenOut]


class TokenCreatedOut(ApiModel):
    info: TokenOut
    token: str = Field(description="The API token; shown only once")


class ProjectPatchIn(ApiModel):
    """Only what is given changes."""

    display_name: str | None = Field(None, max_length=1024)
    clusters: list[NameIn] | None = Field(None, max_length=MAX_LIST, description="Clusters the project may use")
    cluster_selector: Labels | None = Field(None, description="Or clusters with these labels")
    quota: QuotaModel | None = Field(None, description="Replaces the whole quota (unset fields: unlimited)")


class ProjectDeletionOut(ApiModel):
    deleted: bool = Field(description="True: the project is gone; False: its tenants and spaces are being deleted")
    remaining: list[str] = Field(default_factory=list, description="Tenants and spaces still being deleted")
    took: list[str] = Field(default_factory=list)


class ClusterPatchIn(ApiModel):
    """Only what is given changes."""

    display_name: str | None = Field(None, max_length=1024)
    description: str | None = Field(None, max_length=1024)
    labels: Labels | None = Field(None, description="Replaces every label")


class VersionOut(ApiModel):
    version: str = Field(description="The platform's version")
    api: str = Field(description="The REST API's version (the path prefix)")
