"""The ``tether`` command."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import services.cli.kubeconfig  # noqa: F401  (adds `space|tenant kubeconfig`; its plugin is `tether token`)
from schemas.errors import InvalidInput
from schemas.names import check_name, parse_label
from services.cli import output as out
from services.cli.changes import install_cluster_verbs, install_cluster_wait
from services.cli.client import ApiError, Client
from services.cli.common import OutputOpt, api, fail
from services.cli.config import save_context, save_up_context
from services.cli.contexts import config_app
from services.cli.events import events_app
from services.cli.output import Output
from services.cli.people import project_app, team_app, user_app
from services.cli.tokens import token_app
from services.cli.workloads import space_app, tenant_app

app = typer.Typer(
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    help="Tether: many Kubernetes clusters as one.",
)
cluster_app = typer.Typer(no_args_is_help=True, help="Connected clusters.")
agent_app = typer.Typer(no_args_is_help=True, help="The agent that connects a cluster.")
app.add_typer(cluster_app, name="cluster")
app.add_typer(agent_app, name="agent")
app.add_typer(user_app, name="user")
app.add_typer(team_app, name="team")
app.add_typer(project_app, name="project")
app.add_typer(tenant_app, name="tenant")
app.add_typer(space_app, name="space")
app.add_typer(token_app, name="token")
app.add_typer(config_app, name="config")


def _show_version(value: bool) -> None:
    if value:
        from services import VERSION

        print(f"tether {VERSION}")
        raise typer.Exit()


@app.callback()
def root(
    context: Annotated[
        str | None,
        typer.Option("--context", envvar="TETHER_CONTEXT", help="Use this context (see 'tether config get-contexts')"),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the CLI's version")
    ] = False,
) -> None:
    """Tether: many Kubernetes clusters as one."""
    if context:
        os.environ["TETHER_CONTEXT"] = context  # every command's load_context() reads it


@app.command()
def version(output: OutputOpt = Output.table) -> None:
    """The CLI's version and the API's (of the current context)."""
    from services import VERSION
    from services.cli.config import NotLoggedIn, load_context

    info: dict[str, Any] = {"client": VERSION}
    try:
        info["server"] = Client(load_context()).get("/api/v1/version")
    except (ApiError, NotLoggedIn) as exc:
        info["server_error"] = str(exc)
    if out.structured(output, info, names=[VERSION]):
        return
    print(f"Client: tether {VERSION}")
    server = info.get("server")
    print(f"Server: tether {server['version']} (API {server['api']})" if server else f"Server: {info['server_error']}")


install_cluster_verbs(cluster_app)
install_cluster_wait(cluster_app)
app.add_typer(events_app, name="events")


# --- platform -------------------------------------------------------------------------
@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Where the platform keeps its state")] = None,
    nats_port: Annotated[int, typer.Option(help="NATS client port (agents dial it)")] = 4222,
    nats_host: Annotated[str, typer.Option(help="NATS listen address (0.0.0.0 for remote agents)")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="API and web UI port")] = 8080,
    http_host: Annotated[str, typer.Option(help="API and web UI listen address (0.0.0.0 for other machines)")] = (
        "127.0.0.1"
    ),
    public_host: Annotated[
        list[str] | None,
        typer.Option(help="A name other machines reach the API by (the HTTPS certificate covers it); repeatable"),
    ] = None,
    insecure_http: Annotated[
        bool,
        typer.Option(help="Serve the API over plain HTTP (tests, development): kubectl then sends no credentials"),
    ] = False,
    local_driver: Annotated[str | None, typer.Option(help="sim or kube (default: detect)")] = None,
    heartbeat_interval: Annotated[float, typer.Option(help="Seconds between agent heartbeats")] = 5.0,
    offline_after: Annotated[float, typer.Option(help="Seconds of silence before a cluster is offline")] = 12.0,
    tls: Annotated[bool, typer.Option(help="NATS over TLS with a private CA made on first start")] = False,
) -> None:
    """Run the whole platform in the foreground: NATS, every service, and the local cluster's agent."""
    from services.bus.running import setup_logging
    from services.platform.supervisor import Platform as Embedded
    from services.platform.supervisor import PlatformError, UpSettings, default_data_dir

    if local_driver not in (None, "sim", "kube"):
        fail(f"invalid --local-driver {local_driver!r}: expected sim or kube")
    setup_logging()
    settings = UpSettings(
        data_dir=data_dir or default_data_dir(),
        nats_port=nats_port,
        nats_host=nats_host,
        http_port=http_port,
        http_host=http_host,
        https=not insecure_http,
        public_hosts=list(public_host or []),
        local_driver=local_driver,
        heartbeat_interval=heartbeat_interval,
        offline_after=offline_after,
        tls=tls,
    )

    def say(line: str) -> None:
        out.console.print(f"[bold cyan]tether[/] {line}", highlight=False, soft_wrap=True)

    def on_ready(api_url: str, token: str, ca_file: str) -> None:
        name, path, current = save_up_context(api_url, token, settings.data_dir, ca_file)
        note = "current" if current else f"not current: 'tether config use-context {name}' or --context {name}"
        say(f"CLI context {name!r} written to {path} ({note})")

    platform = Embedded(settings, say, on_ready)

    async def main() -> None:
        import signal

        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        signalled = False

        def on_signal() -> None:
            # The first signal stops in order; cancelling again would abort that shutdown half-way and leave
            # nats-server running (and asyncio.run waiting on it), so a second one kills instead.
            nonlocal signalled
            if signalled:
                platform.force_stop()
            else:
                signalled = True
                task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)
        try:
            await platform.run()
        except asyncio.CancelledError:
            pass

    try:
        asyncio.run(main())
    except PlatformError as exc:
        fail(str(exc))


@app.command()
def login(
    server: Annotated[str, typer.Option(help="API URL, e.g. https://127.0.0.1:8080")],
    token: Annotated[str, typer.Option(help="Your API token")],
    ca_file: Annotated[
        str,
        typer.Option(
            help="CA certificate the API's HTTPS is verified with (a 'tether up' platform's <data-dir>/tls/ca.pem; "
            "default: the one another context of that server uses, else the system's)"
        ),
    ] = "",
    context: Annotated[
        str | None, typer.Option("--context", help="Name of the context to write (default: <user>@<host:port>)")
    ] = None,
) -> None:
    """Save a named context (server and token) and make it current; other contexts are kept."""
    from services.cli.config import ConfigError, Context, default_login_name, known_ca_file

    ca = str(Path(ca_file).resolve()) if ca_file else os.environ.get("TETHER_CA_FILE") or known_ca_file(server)
    try:
        who = Client(Context(server=server, token=token, ca_file=ca)).get("/api/v1/whoami")
    except ApiError as exc:
        fail(exc.message)
    try:
        name = context or default_login_name(server, who["user"])
        path = save_context(server, token, name, user=who["user"], ca_file=ca)
    except ConfigError as exc:
        fail(str(exc))
    out.console.print(
        f"logged in to {server} as {who['user']}: context {name!r} saved to {path} and made current", highlight=False
    )


@app.command()
def whoami(output: OutputOpt = Output.table) -> None:
    """Show who the current token belongs to."""
    who = api("GET", "/api/v1/whoami")
    if not out.structured(output, who):
        out.console.print(f"{who['user']}{' (platform admin)' if who['platform_admin'] else ''}")


@app.command()
def versions(output: OutputOpt = Output.table) -> None:
    """The Kubernetes versions a tenant cluster may run (create and upgrade are checked against them)."""
    found = api("GET", "/api/v1/versions")
    if out.structured(output, found):
        return
    out.console.print(f"tenant cluster versions: {', '.join(found['versions'])}", highlight=False)
    out.console.print(f"default: {found['default']}; upgrades: {found['upgrade']}", highlight=False)
    out.console.print(f"engine: {found['engine']}", highlight=False)


# --- clusters --------------------------------------------------------------------------
@cluster_app.command("connect")
def cluster_connect(
    name: str,
    display_name: Annotated[str, typer.Option(help="Human-friendly name")] = "",
    description: Annotated[str, typer.Option(help="Free text")] = "",
    label: Annotated[list[str] | None, typer.Option(help="k=v, repeatable")] = None,
    token_ttl: Annotated[float, typer.Option(help="Seconds the connect token stays valid")] = 3600.0,
    rotate_token: Annotated[
        bool, typer.Option(help="The name exists (pending or disconnected): issue a new connect token")
    ] = False,
    manifests: Annotated[
        bool,
        typer.Option(
            "--manifests",
            help="Print only the Kubernetes manifests that install the agent in the cluster "
            "(pipe them to 'kubectl apply -f -')",
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the one-time connect token")] = False,
    output: OutputOpt = Output.table,
) -> None:
    """Register a cluster; print its one-time connect token and the command that runs its agent."""
    try:
        check_name(name, "cluster name")
        labels = dict(parse_label(text) for text in (label or []))
    except InvalidInput as exc:
        fail(exc.description)
    res = api(
        "POST",
        "/api/v1/clusters",
        json={
            "name": name,
            "display_name": display_name,
            "description": description,
            "labels": labels,
            "token_ttl": token_ttl,
            "rotate_token": rotate_token,
        },
    )
    if manifests:
        sys.stdout.write(res.get("manifests") or "")
        sys.stdout.flush()
        return
    if quiet:
        print(res["token"])
        return
    if out.structured(output, res):
        return
    out.console.print(
        f"cluster [bold]{name}[/] registered; its connect token works once, until {res['expires_at']}.",
        soft_wrap=True,
    )
    out.console.print("Run its agent (it only dials out to NATS):\n")
    sys.stdout.write(f"  {res['agent_command']}\n\n")
    sys.stdout.flush()


@cluster_app.command("list")
def cluster_list(output: OutputOpt = Output.table) -> None:
    """List connected clusters."""
    res = api("GET", "/api/v1/clusters")
    if out.structured(output, res["items"]):
        return
    rows = [
        [
            c["name"],
            out.status_of(c),
            out.ago(c["last_seen"]),
            f"{c['nodes_ready']}/{c['node_count']}",
            f"{c['capacity']['cpu']:g}",
            out.gib(c["capacity"]["memory"]),
            c["kubernetes_version"] or "-",
            c["agent_version"] or "-",
            ",".join(f"{k}={v}" for k, v in sorted(c["labels"].items())) or "-",
        ]
        for c in res["items"]
    ]
    out.table(["NAME", "STATUS", "LAST SEEN", "NODES", "CPU", "MEMORY", "KUBERNETES", "AGENT", "LABELS"], rows)


@cluster_app.command("get")
def cluster_get(name: str, output: OutputOpt = Output.table) -> None:
    """Show one cluster."""
    c = api("GET", f"/api/v1/clusters/{name}")
    if out.structured(output, c):
        return
    fields = [
        ("Name", c["name"]),
        ("Display name", c["display_name"]),
        ("Description", c["description"] or "-"),
        ("Status", out.status_of(c)),
        ("Local", str(c["local"]).lower()),
        ("Last seen", out.ago(c["last_seen"])),
        ("Connected since", c["connected_since"] or "-"),
        ("Driver", c["driver"] or "-"),
        ("Kubernetes", c["kubernetes_version"] or "-"),
        ("Agent", c["agent_version"] or "-"),
        ("Nodes", f"{c['nodes_ready']}/{c['node_count']} ready"),
        ("Capacity", f"{c['capacity']['cpu']:g} CPU, {out.gib(c['capacity']['memory'])}"),
        ("Labels", ", ".join(f"{k}={v}" for k, v in sorted(c["labels"].items())) or "-"),
    ]
    for key, value in fields:
        out.console.print(f"[bold]{key + ':':<17}[/]{value}", highlight=False)
    if c["conditions"]:
        out.console.print("[bold]Conditions:[/]")
        out.table(
            ["  TYPE", "STATUS", "REASON", "MESSAGE", "SINCE"],
            [
                [f"  {x['type']}", x["status"], x["reason"], x["message"], out.ago(x["last_transition_time"])]
                for x in c["conditions"]
            ],
        )


@cluster_app.command("disconnect")
def cluster_disconnect(name: str) -> None:
    """Revoke a cluster's credentials; its agent stops."""
    api("POST", f"/api/v1/clusters/{name}/disconnect")
    out.console.print(f"cluster [bold]{name}[/] disconnected; its agent's credentials no longer work.")


# --- audit ---------------------------------------------------------------------------------
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail (platform admins).")
app.add_typer(audit_app, name="audit")


@audit_app.command("list")
def audit_list(
    since: Annotated[str, typer.Option(help="How far back: 1h, 2d, or an ISO 8601 time")] = "24h",
    user: Annotated[str | None, typer.Option(help="Only this user")] = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster")] = None,
    limit: Annotated[int, typer.Option(help="At most this many records")] = 1000,
    output: OutputOpt = Output.table,
) -> None:
    """Who changed what, when, with what result: every mutating API call and every command sent."""
    params: dict[str, Any] = {"since": since, "limit": limit}
    if user:
        params["user"] = user
    if cluster:
        params["cluster"] = cluster
    items = api("GET", "/api/v1/audit", params=params)["items"]
    if out.structured(output, items):
        return
    out.table(
        ["TIME", "KIND", "USER", "ACTION", "TARGET", "CLUSTER", "RESULT"],
        [
            [
                a["at"][:19].replace("T", " "),
                a["kind"],
                a["user"] or "-",
                a["action"],
                a["target"],
                a["cluster"] or "-",
                a["result"],
            ]
            for a in items
        ],
    )


# --- agent ---------------------------------------------------------------------------------
@agent_app.command(
    "run",
    # --help goes to the agent's own parser, which knows its options.
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def agent_run(ctx: typer.Context) -> None:
    """Run a cluster's agent (same as ``python -m agent run``).

    --server URL --token TOKEN [--driver sim|kube] [--state-dir DIR]
    """
    argv = [sys.executable, "-m", "agent", "run", *ctx.args]
    os.execv(sys.executable, argv)


def main() -> None:
    app()
