"""``tether tenant`` and ``tether space``: create, list, get, act, and wait for the cluster to agree."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from schemas.errors import InvalidInput
from schemas.messages import Phase
from schemas.names import check_name
from schemas.units import parse_duration, parse_size
from services.cli import output as out
from services.cli.client import ApiError
from services.cli.common import OutputOpt, api, client, fail
from services.cli.output import Output

tenant_app = typer.Typer(no_args_is_help=True, help="Tenant clusters (virtual clusters) on connected clusters.")
space_app = typer.Typer(no_args_is_help=True, help="Spaces (namespaces) on connected clusters.")

ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="The project")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Show progress; return when the cluster matches")]
TimeoutOpt = Annotated[float, typer.Option(help="Seconds --wait waits")]

PHASE_STYLE: dict[Phase, str] = {
    "Ready": "green",
    "Sleeping": "blue",
    "Failed": "red",
    "Deleting": "yellow",
    "Pending": "yellow",
    "Upgrading": "yellow",
}


SETTLED: tuple[Phase, ...] = ("Ready", "Sleeping")
"""Where --wait stops (once the record is in sync)."""


def _path(kind: str, project: str, name: str = "") -> str:
    return f"/api/v1/projects/{project}/{kind}s" + (f"/{name}" if name else "")


def _phase(w: dict[str, Any]) -> str:
    return f"[{PHASE_STYLE.get(w['phase'], 'white')}]{w['phase']}[/]"


def _ready_reason(w: dict[str, Any]) -> str:
    for c in w["conditions"]:
        if c["type"] == "Ready":
            return str(c["message"] or c["reason"])
    return ""


def wait(kind: str, project: str, name: str, *, deleting: bool, timeout: float) -> dict[str, Any] | None:
    """Poll until observed matches desired (or the object is gone), showing progress."""
    c = client()
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    with out.console.status(f"waiting for {kind} {name}…") as status:
        while time.monotonic() < deadline:
            try:
                w = c.get(_path(kind, project, name))
            except ApiError as exc:
                if exc.status == 404 and deleting:
                    out.console.print(f"{kind} [bold]{name}[/] deleted.")
                    return None
                fail(exc.message)
            last = w
            if w["phase"] == "Failed":
                fail(f"{kind} {name!r} failed: {w['failure'] or _ready_reason(w)}")
            if w["in_sync"] and not deleting and w["phase"] in SETTLED:
                return dict(w)
            observed = w["observed"]
            status.update(
                f"{kind} [bold]{name}[/]: {_phase(w)} on {w['cluster']} — generation "
                f"{observed['generation'] if observed else 0}/{w['desired']['generation']} applied; "
                f"{_ready_reason(w)}"
            )
            time.sleep(0.5)
    phase = last["phase"] if last else "unknown"
    fail(
        f"timed out after {timeout:g}s waiting for {kind} {name!r} (phase {phase}: "
        f"{_ready_reason(last) if last else 'no answer'}); it carries on in the background"
    )


def _show(w: dict[str, Any], output: Output, verb: str) -> None:
    if not out.structured(output, w):
        out.console.print(f"{w['kind']} [bold]{w['name']}[/] {verb} on cluster {w['cluster']}: {_phase(w)}")


def _finish(
    kind: str,
    project: str,
    name: str,
    res: dict[str, Any],
    output: Output,
    verb: str,
    wait_flag: bool,
    timeout: float,
    deleting: bool = False,
) -> None:
    if wait_flag:
        final = wait(kind, project, name, deleting=deleting, timeout=timeout)
        if final is None:
            out.structured(output, {**res, "phase": "Deleted"})
            return
        res = final
    _show(res, output, verb)


def _create(
    kind: str,
    name: str,
    project: str,
    cluster: str,
    version: str,
    sleep_after: str,
    cpu: float | None,
    memory: str | None,
    wait_flag: bool,
    timeout: float,
    output: Output,
) -> None:
    try:
        check_name(name, f"{kind} name")
        check_name(project, "project name")
        seconds = parse_duration(sleep_after) if sleep_after else 0.0
        mem = parse_size(memory) if memory else None
    except InvalidInput as exc:
        fail(exc.description)
    body: dict[str, Any] = {
        "name": name,
        "cluster": cluster,
        "version": version,
        "sleep_after": seconds,
        "cpu": cpu,
        "memory": mem,
    }
    res = api("POST", _path(kind, project), json=body)
    _finish(kind, project, name, res, output, "created", wait_flag, timeout)


def _list(kind: str, project: str | None, output: Output) -> None:
    params = {"project": project} if project else {}
    items = api("GET", f"/api/v1/{kind}s", params=params)["items"]
    if out.structured(output, items):
        return
    cols = ["NAME", "PROJECT", "CLUSTER", "PHASE"] + (["VERSION"] if kind == "tenant" else []) + ["SYNCED", "AGE"]
    out.table(
        cols,
        [
            [w["name"], w["project"], w["cluster"], _phase(w)]
            + ([w["version"]] if kind == "tenant" else [])
            + ["yes" if w["in_sync"] else "no", out.ago(w["created_at"])]
            for w in items
        ],
    )


def _get(kind: str, name: str, project: str, output: Output) -> None:
    w = api("GET", _path(kind, project, name))
    if out.structured(output, w):
        return
    d, o = w["desired"], w["observed"]
    rows = [("Name", w["name"]), ("Project", w["project"]), ("Cluster", w["cluster"]), ("Phase", _phase(w))]
    if kind == "tenant":
        rows.append(("Version", w["version"]))
    rows += [
        (
            "Desired",
            f"{d['state']}{' ' + d['version'] if d['version'] else ''} (generation {d['generation']}, "
            f"{d['operation']})",
        ),
        (
            "Observed",
            f"{o['state']}{' ' + o['version'] if o['version'] else ''} (generation {o['generation']})" if o else "-",
        ),
        ("Access", ", ".join(f"{m['subject']}={m['access']}" for m in d["members"]) or "-"),
        ("Last activity", out.ago(w["last_activity"])),
        ("Created by", w["created_by"]),
    ]
    if kind == "tenant":
        rows.append(("Sleep after", f"{w['sleep_after']:g}s" if w["sleep_after"] else "never"))
    for key, value in rows:
        out.console.print(f"[bold]{key + ':':<15}[/]{value}", highlight=False)
    out.console.print("[bold]Conditions:[/]")
    out.table(
        ["  TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"],
        [
            [f"  {c['type']}", c["status"], c["reason"], c["message"], out.ago(c["last_transition_time"])]
            for c in w["conditions"]
        ],
    )


def _act(
    kind: str,
    name: str,
    project: str,
    action: str,
    wait_flag: bool,
    timeout: float,
    output: Output,
    body: dict[str, Any] | None = None,
) -> None:
    if action == "delete":
        res = api("DELETE", _path(kind, project, name))
    else:
        res = api("POST", f"{_path(kind, project, name)}/{action}", json=body)
    past = {"sleep": "going to sleep", "wake": "waking", "upgrade": "upgrading", "delete": "being deleted"}[action]
    _finish(
        kind,
        project,
        name,
        res,
        output,
        past if not wait_flag else f"{action} done",
        wait_flag,
        timeout,
        deleting=action == "delete",
    )


# --- tenant ------------------------------------------------------------------------------------
@tenant_app.command("create")
def tenant_create(
    name: str,
    project: ProjectOpt,
    cluster: Annotated[str, typer.Option(help="Default: the platform picks an online cluster with room")] = "",
    version: Annotated[str, typer.Option(help="Kubernetes version, e.g. v1.36")] = "",
    sleep_after: Annotated[str, typer.Option(help="Sleep after this long idle, e.g. 30m (default: never)")] = "",
    cpu: Annotated[float | None, typer.Option(help="CPU cores reserved (default 1)")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory reserved, e.g. 2Gi")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = Output.table,
) -> None:
    """Create a tenant cluster."""
    _create("tenant", name, project, cluster, version, sleep_after, cpu, memory, wait, timeout, output)


@tenant_app.command("list")
def tenant_list(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List tenant clusters you may see."""
    _list("tenant", project, output)


@tenant_app.command("get")
def tenant_get(name: str, project: ProjectOpt, output: OutputOpt = Output.table) -> None:
    """Show a tenant cluster: desired and observed state, conditions."""
    _get("tenant", name, project, output)


@tenant_app.command("sleep")
def tenant_sleep(
    name: str, project: ProjectOpt, wait: WaitOpt = False, timeout: TimeoutOpt = 300.0, output: OutputOpt = Output.table
) -> None:
    """Put a tenant cluster to sleep (its control plane scales to zero)."""
    _act("tenant", name, project, "sleep", wait, timeout, output)


@tenant_app.command("wake")
def tenant_wake(
    name: str, project: ProjectOpt, wait: WaitOpt = False, timeout: TimeoutOpt = 300.0, output: OutputOpt = Output.table
) -> None:
    """Wake a sleeping tenant cluster."""
    _act("tenant", name, project, "wake", wait, timeout, output)


@tenant_app.command("upgrade")
def tenant_upgrade(
    name: str,
    project: ProjectOpt,
    version: Annotated[str, typer.Option(help="Target version, e.g. v1.36")],
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = Output.table,
) -> None:
    """Upgrade a tenant cluster's control plane (one minor version at a time)."""
    _act("tenant", name, project, "upgrade", wait, timeout, output, {"version": version})


@tenant_app.command("delete")
def tenant_delete(
    name: str, project: ProjectOpt, wait: WaitOpt = False, timeout: TimeoutOpt = 300.0, output: OutputOpt = Output.table
) -> None:
    """Delete a tenant cluster and everything in it."""
    _act("tenant", name, project, "delete", wait, timeout, output)


# --- space ---------------------------------------------------------------------------------------
@space_app.command("create")
def space_create(
    name: str,
    project: ProjectOpt,
    cluster: Annotated[str, typer.Option(help="Default: the platform picks an online cluster with room")] = "",
    cpu: Annotated[float | None, typer.Option(help="CPU cores reserved (default 0.5)")] = None,
    memory: Annotated[str | None, typer.Option(help="Memory reserved, e.g. 1Gi")] = None,
    wait: WaitOpt = False,
    timeout: TimeoutOpt = 300.0,
    output: OutputOpt = Output.table,
) -> None:
    """Create a space (a namespace for the project)."""
    _create("space", name, project, cluster, "", "", cpu, memory, wait, timeout, output)


@space_app.command("list")
def space_list(
    project: Annotated[str | None, typer.Option("--project", "-p", help="Only this project")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """List spaces you may see."""
    _list("space", project, output)


@space_app.command("get")
def space_get(name: str, project: ProjectOpt, output: OutputOpt = Output.table) -> None:
    """Show a space."""
    _get("space", name, project, output)


@space_app.command("delete")
def space_delete(
    name: str, project: ProjectOpt, wait: WaitOpt = False, timeout: TimeoutOpt = 300.0, output: OutputOpt = Output.table
) -> None:
    """Delete a space and everything in it."""
    _act("space", name, project, "delete", wait, timeout, output)
