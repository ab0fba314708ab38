"""``tether config``: named contexts, like ``kubectl config`` (get-contexts, use-context, rename, delete)."""

from __future__ import annotations

from typing import Annotated

import typer

from services.cli import output as out
from services.cli.common import fail
from services.cli.config import ConfigError, check_context_name, config_path, read_config, write_config
from services.cli.output import Output

config_app = typer.Typer(
    no_args_is_help=True,
    help="CLI contexts (server + token), kept in $TETHER_CONFIG or $XDG_CONFIG_HOME/tether/config.json.",
)


def _read() -> dict[str, object]:
    try:
        return read_config()
    except ConfigError as exc:
        fail(str(exc))


def _contexts(data: dict[str, object]) -> dict[str, dict[str, str]]:
    contexts = data["contexts"]
    assert isinstance(contexts, dict)
    return contexts


@config_app.command("get-contexts")
def get_contexts(
    output: Annotated[Output, typer.Option("--output", "-o", help="table, wide, json, yaml or name")] = Output.table,
) -> None:
    """List contexts; the current one is marked with '*'. Tokens are never shown."""
    data = _read()
    current = data.get("current")
    rows = [
        {"name": n, "current": n == current, "server": c.get("server", ""), "user": c.get("user", "")}
        | ({"data_dir": c["data_dir"]} if c.get("data_dir") else {})
        for n, c in sorted(_contexts(data).items())
    ]
    if out.structured(output, rows, names=[str(r["name"]) for r in rows]):
        return
    headers = ["CURRENT", "NAME", "SERVER", "USER"] + (["DATA DIR"] if output == Output.wide else [])
    out.table(
        headers,
        [
            ["*" if r["current"] else "", str(r["name"]), str(r["server"]), str(r["user"]) or "-"]
            + ([str(r.get("data_dir", "-"))] if output == Output.wide else [])
            for r in rows
        ],
    )


@config_app.command("current-context")
def current_context() -> None:
    """Print the current context's name."""
    current = _read().get("current")
    if not current:
        fail(f"no current context in {config_path()}")
    print(current)


@config_app.command("use-context")
def use_context(name: str) -> None:
    """Make NAME the current context."""
    data = _read()
    if name not in _contexts(data):
        fail(f"no context {name!r}; known: {', '.join(sorted(_contexts(data))) or 'none'}")
    data["current"] = name
    write_config(data)
    out.console.print(f"switched to context {name!r}", highlight=False)


@config_app.command("rename-context")
def rename_context(old: str, new: str) -> None:
    """Rename a context (the current one stays current)."""
    data = _read()
    contexts = _contexts(data)
    try:
        check_context_name(new)
    except ConfigError as exc:
        fail(str(exc))
    if old not in contexts:
        fail(f"no context {old!r}")
    if new in contexts:
        fail(f"context {new!r} exists already; delete or rename it first")
    contexts[new] = contexts.pop(old)
    if data.get("current") == old:
        data["current"] = new
    write_config(data)
    out.console.print(f"context {old!r} renamed to {new!r}", highlight=False)


@config_app.command("delete-context")
def delete_context(name: str) -> None:
    """Delete a context from this machine (the token itself keeps working: 'tether token revoke' ends it)."""
    data = _read()
    if name not in _contexts(data):
        fail(f"no context {name!r}")
    del _contexts(data)[name]
    if data.get("current") == name:
        data.pop("current")
        out.err.print("that was the current context; pick another with 'tether config use-context'", highlight=False)
    write_config(data)
    out.console.print(f"context {name!r} deleted", highlight=False)
