"""Day-two verbs: change and remove users, teams, projects and clusters.

Every removal first says what it will take with it; at a terminal it then asks (``--yes`` skips the
question); scripted (no terminal on stdin) it goes ahead, as kubectl does.
"""

from __future__ import annotations

import sys
import time
from typing import Annotated, Any

import typer

from schemas.errors import InvalidInput
from schemas.names import check_name, parse_label
from schemas.units import parse_quota
from services.cli import output as out
from services.cli.client import ApiError
from services.cli.common import OutputOpt, api, client, fail
from services.cli.output import Output
from services.cli.people import project_app, team_app, user_app

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]


def confirm(what: str, takes: list[str], yes: bool) -> None:
    """Say what goes; at a terminal, ask unless --yes."""
    out.err.print(f"This deletes {what}" + (":" if takes else "."), highlight=False)
    for item in takes:
        out.err.print(f"  - {item}", highlight=False)
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm("Go ahead?", default=False, err=True):
        fail("nothing deleted", code=1)


def _said(output: Output, res: Any, text: str) -> None:
    if not out.structured(output, res):
        out.console.print(text, highlight=False, soft_wrap=True)


# --- users --------------------------------------------------------------------------------------
def _user_takes(name: str) -> list[str]:
    takes = [
        f"API token {t['id']} ({t['name'] or 'unnamed'})" for t in api("GET", f"/api/v1/users/{name}/tokens")["items"]
    ]
    takes += [f"membership of team {t['name']}" for t in api("GET", "/api/v1/teams")["items"] if name in t["members"]]
    for p in api("GET", "/api/v1/projects")["items"]:
        takes += [
            f"role {m['role']} in project {p['name']}"
            for m in p["members"]
            if m["kind"] == "user" and m["name"] == name
        ]
    return takes


@user_app.command("delete")
def user_delete(name: str, yes: YesOpt = False, output: OutputOpt = Output.table) -> None:
    """Delete a user: their API tokens stop working at once; their teams and project roles go too."""
    check_user(name)
    confirm(f"user {name}", _user_takes(name), yes)
    res = api("DELETE", f"/api/v1/users/{name}")
    _said(output, res, f"user {name} deleted ({len(res['took'])} related record(s) with it).")


def check_user(name: str) -> None:
    try:
        check_name(name, "user name")
    except InvalidInput as exc:
        fail(exc.description)


@user_app.command("disable")
def user_disable(name: str, output: OutputOpt = Output.table) -> None:
    """Refuse all of a user's API tokens until they are enabled again (nothing is deleted)."""
    check_user(name)
    _said(output, api("POST", f"/api/v1/users/{name}/disable"), f"user {name} disabled: their tokens are refused.")


@user_app.command("enable")
def user_enable(name: str, output: OutputOpt = Output.table) -> None:
    """Accept a disabled user's API tokens again."""
    check_user(name)
    _said(output, api("POST", f"/api/v1/users/{name}/enable"), f"user {name} enabled.")


# --- teams --------------------------------------------------------------------------------------
@team_app.command("remove-member")
def team_remove_member(team: str, user: str, output: OutputOpt = Output.table) -> None:
    """Remove a user from a team (they lose what the team's roles gave them)."""
    res = api("DELETE", f"/api/v1/teams/{team}/members/{user}")
    _said(output, res, f"team {team}: {', '.join(res['members']) or 'no members'}")


@team_app.command("delete")
def team_delete(name: str, yes: YesOpt = False, output: OutputOpt = Output.table) -> None:
    """Delete a team and its roles in projects (its members keep roles given to them directly)."""
    teams = {t["name"]: t for t in api("GET", "/api/v1/teams")["items"]}
    if name not in teams:
        fail(f"team {name!r} not found")
    takes = [f"membership of user {m}" for m in teams[name]["members"]]
    for p in api("GET", "/api/v1/projects")["items"]:
        takes += [
            f"role {m['role']} in project {p['name']}"
            for m in p["members"]
            if m["kind"] == "team" and m["name"] == name
        ]
    confirm(f"team {name}", takes, yes)
    _said(output, api("DELETE", f"/api/v1/teams/{name}"), f"team {name} deleted.")


# --- projects ------------------------------------------------------------------------------------
@project_app.command("update")
def project_update(
    name: str,
    cluster: Annotated[list[str] | None, typer.Option(help="Allowed cluster; repeatable; replaces the list")] = None,
    no_clusters: Annotated[bool, typer.Option("--no-clusters", help="Clear the list of allowed clusters")] = False,
    cluster_selector: Annotated[list[str] | None, typer.Option(help="k=v; repeatable; replaces the selector")] = None,
    no_selector: Annotated[bool, typer.Option("--no-selector", help="Clear the cluster selector")] = False,
    quota: Annotated[str | None, typer.Option(help="tenants=N,spaces=N,cpu=N,memory=SIZE (replaces it)")] = None,
    display_name: Annotated[str | None, typer.Option(help="Human-friendly name")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Change a project's quota, allowed clusters, selector or display name (only what is given)."""
    body: dict[str, Any] = {}
    try:
        check_name(name, "project name")
        if cluster or no_clusters:
            body["clusters"] = [] if no_clusters else cluster
        if cluster_selector or no_selector:
            body["cluster_selector"] = {} if no_selector else dict(parse_label(s) for s in cluster_selector or [])
        if quota is not None:
            body["quota"] = parse_quota(quota)
    except InvalidInput as exc:
        fail(exc.description)
    if display_name is not None:
        body["display_name"] = display_name
    if not body:
        fail(
            "nothing to change: give --quota, --cluster, --no-clusters, --cluster-selector, --no-selector "
            "or --display-name"
        )
    res = api("PATCH", f"/api/v1/projects/{name}", json=body)
    _said(output, res, f"project {name} updated.")


@project_app.command("delete")
def project_delete(
    name: str,
    cascade: Annotated[bool, typer.Option(help="Also delete its tenant clusters and spaces")] = False,
    yes: YesOpt = False,
    wait: Annotated[bool, typer.Option(help="With --cascade: show progress until the project is gone")] = True,
    timeout: Annotated[float, typer.Option(help="Seconds --wait waits")] = 600.0,
    output: OutputOpt = Output.table,
) -> None:
    """Delete a project; refused while it has tenant clusters or spaces, unless --cascade."""
    p = api("GET", f"/api/v1/projects/{name}")
    u = p["usage"]
    takes = [f"{m['kind']} {m['name']}'s role {m['role']}" for m in p["members"]]
    if u["tenants"] or u["spaces"]:
        takes.append(
            f"{u['tenants']} tenant cluster(s) and {u['spaces']} space(s)"
            + ("" if cascade else " (refused without --cascade)")
        )
    confirm(f"project {name}", takes, yes)
    path = f"/api/v1/projects/{name}" + ("?cascade=true" if cascade else "")
    res = api("DELETE", path)
    if res["deleted"] or not wait:
        _said(
            output,
            res,
            f"project {name} deleted." if res["deleted"] else f"project {name}: deleting {', '.join(res['remaining'])}",
        )
        return
    res = _wait_project_gone(path, res, timeout)
    _said(output, res, f"project {name} deleted with its tenant clusters and spaces.")


def _wait_project_gone(path: str, res: dict[str, Any], timeout: float) -> dict[str, Any]:
    c = client()
    total = len(res["remaining"])
    deadline = time.monotonic() + timeout
    with out.console.status("") as status:
        while time.monotonic() < deadline:
            status.update(
                f"deleting: {total - len(res['remaining'])}/{total} done; waiting for {', '.join(res['remaining'])}"
            )
            time.sleep(0.5)
            try:
                res = c.request("DELETE", path)
            except ApiError as exc:
                fail(exc.message)
            if res["deleted"]:
                return res
    fail(
        f"timed out after {timeout:g}s; still deleting {', '.join(res['remaining'])} "
        "(it carries on; run the command again)"
    )


# --- clusters ------------------------------------------------------------------------------------
def install_cluster_verbs(cluster_app: typer.Typer) -> None:
    @cluster_app.command("update")
    def cluster_update(
        name: str,
        label: Annotated[list[str] | None, typer.Option(help="k=v; repeatable; replaces all labels")] = None,
        no_labels: Annotated[bool, typer.Option("--no-labels", help="Remove every label")] = False,
        display_name: Annotated[str | None, typer.Option(help="Human-friendly name")] = None,
        description: Annotated[str | None, typer.Option(help="Free text")] = None,
        output: OutputOpt = Output.table,
    ) -> None:
        """Change a cluster's labels, display name or description (only what is given)."""
        body: dict[str, Any] = {}
        try:
            check_name(name, "cluster name")
            if label or no_labels:
                body["labels"] = {} if no_labels else dict(parse_label(t) for t in label or [])
        except InvalidInput as exc:
            fail(exc.description)
        if display_name is not None:
            body["display_name"] = display_name
        if description is not None:
            body["description"] = description
        if not body:
            fail("nothing to change: give --label, --no-labels, --display-name or --description")
        _said(output, api("PATCH", f"/api/v1/clusters/{name}", json=body), f"cluster {name} updated.")

    @cluster_app.command("remove")
    def cluster_remove(name: str, yes: YesOpt = False, output: OutputOpt = Output.table) -> None:
        """Remove a disconnected (or never connected) cluster from the platform."""
        c = api("GET", f"/api/v1/clusters/{name}")
        if c["state"] == "connected":
            fail(f"cluster {name!r} is connected; disconnect it first ('tether cluster disconnect {name}')")
        takes = ["its record, its presence, its command consumer and any commands still waiting for it"]
        confirm(f"cluster {name}", takes, yes)
        res = api("DELETE", f"/api/v1/clusters/{name}")
        _said(output, res, f"cluster {name} removed.")


def _cluster_state(name: str) -> str:
    try:
        c = client().get(f"/api/v1/clusters/{name}")
    except ApiError as exc:
        if exc.status == 404:
            return "removed"
        fail(exc.message)
    if c["state"] != "connected":
        return str(c["state"])
    return "online" if c["online"] else "offline"


def install_cluster_wait(cluster_app: typer.Typer) -> None:
    @cluster_app.command("wait")
    def cluster_wait(
        name: str,
        for_: Annotated[
            str, typer.Option("--for", help="online, offline, pending, disconnected or removed")
        ] = "online",
        timeout: Annotated[float, typer.Option(help="Seconds to wait")] = 60.0,
    ) -> None:
        """Wait until a cluster is online (or offline, disconnected, removed), showing progress."""
        wanted = ("online", "offline", "pending", "disconnected", "removed")
        if for_ not in wanted:
            fail(f"invalid --for {for_!r}: expected one of {', '.join(wanted)}")
        deadline = time.monotonic() + timeout
        state = ""
        with out.console.status("") as status:
            while time.monotonic() < deadline:
                state = _cluster_state(name)
                if state == for_:
                    out.console.print(f"cluster {name} is {state}.", highlight=False)
                    return
                status.update(f"cluster {name}: {state}; waiting for {for_}…")
                time.sleep(0.5)
        fail(f"timed out after {timeout:g}s waiting for cluster {name!r} to be {for_} (it is {state})")
