"""Printing: tables for people, ``-o json`` for scripts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table


def _console(stderr: bool = False) -> Console:
    """At a terminal, rich's console; piped, no wrapping at 80 columns (a table row, an error: one line)."""
    stream = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=100_000, soft_wrap=True)


console = _console()
err = _console(stderr=True)


class Output(str, Enum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    name = "name"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _names(data: Any) -> list[str]:
    """``kind/name`` (tenants and spaces) or the name (or id) of each item."""
    names = []
    for item in data if isinstance(data, list) else [data]:
        if not isinstance(item, dict):
            continue
        info: dict[str, Any] = item["info"] if isinstance(item.get("info"), dict) else {}
        name = item.get("name") or item.get("id") or info.get("id") or ""
        names.append(f"{item['kind']}/{name}" if item.get("kind") in ("tenant", "space") else str(name))
    return names


def structured(output: Output, data: Any, names: list[str] | None = None) -> bool:
    """Print ``data`` as json, yaml or names when asked (True), else leave it to the table (False)."""
    if output == Output.json:
        print_json(data)
    elif output == Output.yaml:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=True, allow_unicode=True))
    elif output == Output.name:
        for name in names if names is not None else _names(data):
            sys.stdout.write(f"{name}\n")
    else:
        return False
    return True


def ago(iso: str | None) -> str:
    if not iso:
        return "never"
    then = datetime.fromisoformat(iso)
    secs = (datetime.now(UTC) - then).total_seconds()
    secs = max(secs, 0)
    if secs < 90:
        return f"{secs:.0f}s ago"
    if secs < 5400:
        return f"{secs / 60:.0f}m ago"
    if secs < 172800:
        return f"{secs / 3600:.0f}h ago"
    return f"{secs / 86400:.0f}d ago"


def gib(n: int) -> str:
    return f"{n / 2**30:.1f}Gi" if n else "-"


def table(columns: list[str], rows: list[list[str]]) -> None:
    t = Table(box=None, pad_edge=False, show_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*r)
    console.print(t)


def status_of(cluster: dict[str, Any]) -> str:
    if cluster["state"] == "pending":
        return "[yellow]Pending[/]"
    if cluster["state"] == "disconnected":
        return "[dim]Disconnected[/]"
    return "[green]Online[/]" if cluster["online"] else "[red]Offline[/]"
