"""``tether space|tenant kubeconfig`` and ``tether token``: kubectl through the platform's gateway.

The kubeconfig points kubectl at the API (``/kubernetes/project/<p>/space|tenant/<name>``), carries the CA
the API's HTTPS is verified with (the context's: ``tether up`` makes one), and gets its credential from
``tether token``, an exec credential plugin (``client.authentication.k8s.io/v1``) run for the Tether context
that wrote it: the file holds no token, and a token changed with ``tether login`` is used at once.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from schemas.gateway import gateway_path, space_namespace
from schemas.names import check_name
from services.cli import output as out
from services.cli.client import ApiError
from services.cli.common import client, fail
from services.cli.config import Context, NotLoggedIn, load_context
from services.cli.workloads import space_app, tenant_app

EXEC_API = "client.authentication.k8s.io/v1"
ProjectOpt = Annotated[str, typer.Option("--project", "-p", help="The project")]
MergeOpt = Annotated[
    bool, typer.Option("--merge", help="Add it as a context to your kubeconfig ($KUBECONFIG or ~/.kube/config)")
]


def tether_command() -> list[str]:
    """This ``tether``, by absolute path (kubectl runs the plugin outside any venv): its script, or this
    Python with ``-m services.cli`` when it was started that way."""
    here = Path(sys.argv[0])
    if here.name == "tether" and here.exists():
        return [str(here.resolve())]
    if here.name == "__main__.py" and here.parent.name == "cli":
        return [sys.executable, "-m", "services.cli"]
    return [shutil.which("tether") or "tether"]


def build(kind: str, project: str, name: str, ctx: Context) -> dict[str, Any]:
    server = ctx.server
    entry = f"tether-{project}-{kind}-{name}"
    context: dict[str, Any] = {"cluster": entry, "user": entry}
    cluster: dict[str, Any] = {"server": f"{server}{gateway_path(kind, project, name)}"}
    if ctx.ca_file and server.startswith("https://"):
        cluster["certificate-authority-data"] = base64.b64encode(Path(ctx.ca_file).read_bytes()).decode()
    # The context that wrote it, by name: kubectl keeps acting as that member when another context is current.
    command, *args = tether_command()
    args += ["--context", ctx.name, "token"] if ctx.name else ["token"]
    if kind == "space":
        context["namespace"] = space_namespace(project, name)
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": entry, "cluster": cluster}],
        "users": [
            {
                "name": entry,
                "user": {
                    "exec": {
                        "apiVersion": EXEC_API,
                        "command": command,
                        "args": [*args, "--server", server],
                        "interactiveMode": "Never",
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
        "contexts": [{"name": entry, "context": context}],
        "current-context": entry,
    }


def default_kubeconfig() -> Path:
    env = os.environ.get("KUBECONFIG", "")
    first = next((p for p in env.split(os.pathsep) if p), "")
    return Path(first) if first else Path.home() / ".kube" / "config"


def merge(into: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """``into`` with ``new``'s cluster, user and context added (same names replaced) and made current."""
    merged = dict(into) or {"apiVersion": "v1", "kind": "Config"}
    for section in ("clusters", "users", "contexts"):
        names = {e["name"] for e in new[section]}
        kept = [e for e in merged.get(section) or [] if isinstance(e, dict) and e.get("name") not in names]
        merged[section] = kept + new[section]
    merged["current-context"] = new["current-context"]
    return merged


def write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tether-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def kubeconfig(kind: str, project: str, name: str, merge_it: bool) -> None:
    check_name(project, "project name")
    check_name(name, f"{kind} name")
    c = client()
    try:
        c.get(f"/api/v1/projects/{project}/{kind}s/{name}")  # exists, and the caller may see it
    except ApiError as exc:
        fail(exc.message)
    try:
        config = build(kind, project, name, c.ctx)
    except OSError as exc:
        fail(f"cannot read the API's CA file {c.ctx.ca_file}: {exc}")
    if not merge_it:
        sys.stdout.write(yaml.safe_dump(config, sort_keys=False))
        return
    path = default_kubeconfig()
    try:
        current = yaml.safe_load(path.read_text()) if path.exists() else {}
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read {path}: {exc}")
    if current is not None and not isinstance(current, dict):
        fail(f"{path} is not a kubeconfig")
    write_private(path, yaml.safe_dump(merge(current or {}, config), sort_keys=False))
    out.console.print(f"context {config['current-context']!r} added to {path} and made current", highlight=False)


@space_app.command("kubeconfig")
def space_kubeconfig(name: str, project: ProjectOpt, merge_it: MergeOpt = False) -> None:
    """Print a kubeconfig for a space (namespace preset), or --merge it into yours."""
    kubeconfig("space", project, name, merge_it)


@tenant_app.command("kubeconfig")
def tenant_kubeconfig(name: str, project: ProjectOpt, merge_it: MergeOpt = False) -> None:
    """Print a kubeconfig for a tenant cluster, or --merge it into yours."""
    kubeconfig("tenant", project, name, merge_it)


def token(server: Annotated[str, typer.Option(help="The API the kubeconfig points at")] = "") -> None:
    """Exec credential plugin for kubectl: print the current context's token as an ExecCredential."""
    try:
        ctx = load_context()
    except NotLoggedIn as exc:
        fail(str(exc))
    if server and server.rstrip("/") != ctx.server:
        fail(f"the current Tether context is {ctx.server}, not {server}: 'tether login --server {server}' first")
    credential = {"apiVersion": EXEC_API, "kind": "ExecCredential", "status": {"token": ctx.token}}
    sys.stdout.write(json.dumps(credential) + "\n")
