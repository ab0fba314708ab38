"""Routes of users, teams, projects and their members (their day-two changes: ``routes_people``,
``routes_records``)."""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import FastAPI

from schemas import subjects
from schemas.api import (
    MemberIn,
    ProjectIn,
    ProjectListOut,
    ProjectOut,
    TeamIn,
    TeamListOut,
    TeamMemberIn,
    TeamOut,
    UserCreatedOut,
    UserIn,
    UserListOut,
)
from schemas.messages import (
    Empty,
    MemberChange,
    Membership,
    NameRequest,
    NamesRequest,
    ProjectCreate,
    ProjectList,
    ProjectRecord,
    Quota,
    TeamCreate,
    TeamList,
    TeamMemberAdd,
    TeamRecord,
    UserCreate,
    UserCreated,
    UserList,
    WorkloadList,
    WorkloadQuery,
    WorkloadRecord,
)
from schemas.names import check_name
from services.api import logic
from services.api.auth import ERRORS, Change, Platform, Who, authorize, require_admin, visible


async def all_workloads(platform: Platform) -> list[WorkloadRecord]:
    tenants, spaces = await asyncio.gather(
        platform.call(subjects.Lifecycle.LIST, WorkloadQuery(kind="tenant", all=True), WorkloadList),
        platform.call(subjects.Lifecycle.LIST, WorkloadQuery(kind="space", all=True), WorkloadList),
    )
    return tenants.items + spaces.items


def install_access_routes(app: FastAPI, platform: Platform) -> None:
    @app.post("/api/v1/users", response_model=UserCreatedOut, status_code=201, responses=ERRORS, tags=["access"])
    async def create_user(body: UserIn, who: Who) -> UserCreatedOut:
        require_admin(who)
        created = await platform.call(
            subjects.Access.USER_CREATE,
            UserCreate(name=body.name, email=body.email, platform_admin=body.platform_admin),
            UserCreated,
        )
        return UserCreatedOut(user=logic.user_view(created.user), token=created.token)

    @app.get("/api/v1/users", response_model=UserListOut, responses=ERRORS, tags=["access"])
    async def list_users(who: Who) -> UserListOut:
        require_admin(who)
        users = await platform.call(subjects.Access.USER_LIST, Empty(), UserList)
        return UserListOut(items=[logic.user_view(u) for u in users.users])

    @app.post("/api/v1/teams", response_model=TeamOut, status_code=201, responses=ERRORS, tags=["access"])
    async def create_team(body: TeamIn, who: Who) -> TeamOut:
        require_admin(who)
        team = await platform.call(
            subjects.Access.TEAM_CREATE, TeamCreate(name=body.name, members=tuple(body.members)), TeamRecord
        )
        return logic.team_view(team)

    @app.get("/api/v1/teams", response_model=TeamListOut, responses=ERRORS, tags=["access"])
    async def list_teams(who: Who) -> TeamListOut:
        require_admin(who)
        teams = await platform.call(subjects.Access.TEAM_LIST, Empty(), TeamList)
        return TeamListOut(items=[logic.team_view(t) for t in teams.teams])

    @app.post("/api/v1/teams/{team}/members", response_model=TeamOut, responses=ERRORS, tags=["access"])
    async def add_team_member(team: str, body: TeamMemberIn, who: Who) -> TeamOut:
        require_admin(who)
        check_name(team, "team name")
        record = await platform.call(
            subjects.Access.TEAM_ADD_MEMBER, TeamMemberAdd(team=team, user=body.user), TeamRecord
        )
        return logic.team_view(record)

    async def project_out(name: str, who: Who, role: str | None) -> ProjectOut:
        project, membership, records = await asyncio.gather(
            platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord),
            platform.call(subjects.Access.MEMBERS_GET, NameRequest(name=name), Membership),
            all_workloads(platform),
        )
        return logic.project_view(project, membership, records, role)

    @app.post("/api/v1/projects", response_model=ProjectOut, status_code=201, responses=ERRORS, tags=["projects"])
    async def create_project(body: ProjectIn, who: Who) -> ProjectOut:
        require_admin(who)
        q = body.quota
        await platform.call(
            subjects.Projects.CREATE,
            ProjectCreate(
                name=body.name,
                display_name=body.display_name,
                clusters=tuple(body.clusters),
                cluster_selector=body.cluster_selector,
                created_by=who.user,
                quota=Quota(tenants=q.tenants, spaces=q.spaces, cpu=q.cpu, memory=q.memory),
            ),
            ProjectRecord,
        )
        return await project_out(body.name, who, None)

    @app.get("/api/v1/projects", response_model=ProjectListOut, responses=ERRORS, tags=["projects"])
    async def list_projects(who: Who) -> ProjectListOut:
        seen = await visible(platform, who)
        projects, records = await asyncio.gather(
            platform.call(subjects.Projects.LIST, NamesRequest(names=tuple(seen.projects), all=seen.all), ProjectList),
            all_workloads(platform),
        )
        memberships = await asyncio.gather(
            *(
                platform.call(subjects.Access.MEMBERS_GET, NameRequest(name=p.name), Membership)
                for p in projects.projects
            )
        )
        return ProjectListOut(
            items=[
                logic.project_view(p, m, records, seen.projects.get(p.name))
                for p, m in zip(projects.projects, memberships, strict=True)
            ]
        )

    @app.get("/api/v1/projects/{name}", response_model=ProjectOut, responses=ERRORS, tags=["projects"])
    async def get_project(name: str, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.read", name)
        return await project_out(name, who, decision.role)

    @app.put("/api/v1/projects/{name}/members", response_model=ProjectOut, responses=ERRORS, tags=["projects"])
    async def set_member(name: str, body: MemberIn, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.manage", name)
        await platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)
        await platform.call(
            subjects.Access.MEMBER_SET,
            MemberChange(project=name, user=body.user, team=body.team, role=body.role),
            Membership,
        )
        platform.forget_sessions(Change(project=name))  # a role may have been lowered
        return await project_out(name, who, decision.role)

    @app.delete(
        "/api/v1/projects/{name}/members/{kind}/{member}",
        response_model=ProjectOut,
        responses=ERRORS,
        tags=["projects"],
    )
    async def remove_member(name: str, kind: Literal["user", "team"], member: str, who: Who) -> ProjectOut:
        check_name(name, "project name")
        decision = await authorize(platform, who, "project.manage", name)
        await platform.call(subjects.Projects.GET, NameRequest(name=name), ProjectRecord)
        change = MemberChange(
            project=name, user=member if kind == "user" else "", team=member if kind == "team" else "", role=None
        )
        await platform.call(subjects.Access.MEMBER_SET, change, Membership)
        platform.forget_sessions(Change(project=name))
        return await project_out(name, who, decision.role)
