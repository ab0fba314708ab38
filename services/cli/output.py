"""Printing: tables for people, ``-o json`` for scripts."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


class Output(str, Enum):
    table = "table"
    json = "json"


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


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
