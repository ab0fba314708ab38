"""``tether user``, ``tether team`` and ``tether project``."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from schemas.errors import InvalidInput
from schemas.names import check_name, parse_label
from schemas.units import parse_quota
from services.cli import output as out
from services.cli.common import OutputOpt, api, fail
from services.cli.output import Output

user_app = typer.Typer(no_args_is_help=True, help="Users and their API tokens.")
team_app = typer.Typer(no_args_is_help=True, help="Teams of users.")
project_app = typer.Typer(no_args_is_help=True, help="Projects: members, roles, clusters, quotas.")


@user_app.command("create")
def user_create(
    name: str,
    email: Annotated[str, typer.Option(help="E-mail address")] = "",
    platform_admin: Annotated[bool, typer.Option(help="Make the user a platform admin")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the API token")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Create a user and print their API token (shown only this once)."""
    res = api("POST", "/api/v1/users", json={"name": name, "email": email, "platform_admin": platform_admin})
    if quiet:
        print(res["token"])
        return
    if out.structured(output, res):
        return
    out.console.print(f"user [bold]{name}[/] created. API token (shown only once):")
    print(f"  {res['token']}")
    out.console.print(f"They log in with: tether login --server URL --token {res['token'][:8]}…")


@user_app.command("list")
def user_list(output: OutputOpt = Output.table) -> None:
    """List users."""
    res = api("GET", "/api/v1/users")["items"]
    if out.structured(output, res):
        return
    out.table(
        ["NAME", "EMAIL", "PLATFORM ADMIN", "CREATED"],
        [[u["name"], u["email"] or "-", "yes" if u["platform_admin"] else "", out.ago(u["created_at"])] for u in res],
    )


@team_app.command("create")
def team_create(
    name: str,
    member: Annotated[list[str] | None, typer.Option(help="A user; repeatable")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create a team."""
    res = api("POST", "/api/v1/teams", json={"name": name, "members": member or []})
    if not out.structured(output, res):
        out.console.print(f"team [bold]{name}[/] created with {len(res['members'])} member(s).")


@team_app.command("add-member")
def team_add_member(team: str, user: str, output: OutputOpt = Output.table) -> None:
    """Add a user to a team."""
    res = api("POST", f"/api/v1/teams/{team}/members", json={"user": user})
    if not out.structured(output, res):
        out.console.print(f"team [bold]{team}[/]: {', '.join(res['members'])}")


@team_app.command("list")
def team_list(output: OutputOpt = Output.table) -> None:
    """List teams."""
    res = api("GET", "/api/v1/teams")["items"]
    if out.structured(output, res):
        return
    out.table(["NAME", "MEMBERS"], [[t["name"], ", ".join(t["members"]) or "-"] for t in res])


def _quota_text(q: dict[str, Any]) -> str:
    parts = [f"{k}={v}" for k, v in (("tenants", q["tenants"]), ("spaces", q["spaces"])) if v is not None]
    if q["cpu"] is not None:
        parts.append(f"cpu={q['cpu']:g}")
    if q["memory"] is not None:
        parts.append(f"memory={out.gib(q['memory'])}")
    return ",".join(parts) or "unlimited"


@project_app.command("create")
def project_create(
    name: str,
    cluster: Annotated[list[str] | None, typer.Option(help="A cluster the project may use; repeatable")] = None,
    cluster_selector: Annotated[list[str] | None, typer.Option(help="k=v: or clusters with this label")] = None,
    quota: Annotated[str, typer.Option(help="tenants=N,spaces=N,cpu=N,memory=SIZE")] = "",
    display_name: Annotated[str, typer.Option(help="Human-friendly name")] = "",
    output: OutputOpt = Output.table,
) -> None:
    """Create a project."""
    try:
        check_name(name, "project name")
        selector = dict(parse_label(s) for s in (cluster_selector or []))
        q = parse_quota(quota)
    except InvalidInput as exc:
        fail(exc.description)
    res = api(
        "POST",
        "/api/v1/projects",
        json={
            "name": name,
            "display_name": display_name,
            "clusters": cluster or [],
            "cluster_selector": selector,
            "quota": q,
        },
    )
    if not out.structured(output, res):
        out.console.print(f"project [bold]{name}[/] created (quota: {_quota_text(res['quota'])}).")


@project_app.command("add-member")
def project_add_member(
    project: str,
    role: Annotated[str, typer.Option(help="admin, user or viewer")],
    user: Annotated[str, typer.Option(help="A user")] = "",
    team: Annotated[str, typer.Option(help="Or a team")] = "",
    output: OutputOpt = Output.table,
) -> None:
    """Give a user or a team a role in a project (replaces an earlier role)."""
    if bool(user) == bool(team):
        fail("name exactly one of --user or --team")
    if role not in ("admin", "user", "viewer"):
        fail(f"invalid --role {role!r}: expected admin, user or viewer")
    res = api("PUT", f"/api/v1/projects/{project}/members", json={"user": user, "team": team, "role": role})
    if not out.structured(output, res):
        who = f"user {user}" if user else f"team {team}"
        out.console.print(f"{who} is now {role} in project [bold]{project}[/].")


@project_app.command("remove-member")
def project_remove_member(
    project: str,
    user: Annotated[str, typer.Option(help="A user")] = "",
    team: Annotated[str, typer.Option(help="Or a team")] = "",
) -> None:
    """Remove a user or a team from a project; their access to its tenants and spaces goes with it."""
    if bool(user) == bool(team):
        fail("name exactly one of --user or --team")
    kind, name = ("user", user) if user else ("team", team)
    api("DELETE", f"/api/v1/projects/{project}/members/{kind}/{name}")
    out.console.print(f"{kind} {name} removed from project [bold]{project}[/].")


@project_app.command("list")
def project_list(output: OutputOpt = Output.table) -> None:
    """List the projects you may see."""
    res = api("GET", "/api/v1/projects")["items"]
    if out.structured(output, res):
        return
    out.table(
        ["NAME", "MEMBERS", "TENANTS", "SPACES", "CPU", "QUOTA", "CLUSTERS"],
        [
            [
                p["name"],
                str(len(p["members"])),
                str(p["usage"]["tenants"]),
                str(p["usage"]["spaces"]),
                f"{p['usage']['cpu']:g}",
                _quota_text(p["quota"]),
                _clusters_text(p),
            ]
            for p in res
        ],
    )


def _clusters_text(p: dict[str, Any]) -> str:
    parts = list(p["clusters"]) + [f"{k}={v}" for k, v in sorted(p["cluster_selector"].items())]
    return ", ".join(parts) or "any"


@project_app.command("get")
def project_get(name: str, output: OutputOpt = Output.table) -> None:
    """Show a project: members and roles, allowed clusters, quota use."""
    p = api("GET", f"/api/v1/projects/{name}")
    if out.structured(output, p):
        return
    u = p["usage"]
    for key, value in (
        ("Name", p["name"]),
        ("Clusters", _clusters_text(p)),
        ("Quota", _quota_text(p["quota"])),
        ("In use", f"{u['tenants']} tenants, {u['spaces']} spaces, {u['cpu']:g} CPU, {out.gib(u['memory'])}"),
        ("Your role", p["my_role"] or "-"),
        ("Created by", p["created_by"] or "-"),
    ):
        out.console.print(f"[bold]{key + ':':<12}[/]{value}", highlight=False)
    out.console.print("[bold]Members:[/]")
    out.table(["  KIND", "NAME", "ROLE"], [[f"  {m['kind']}", m["name"], m["role"]] for m in p["members"]])
