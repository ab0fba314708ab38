"""``tether events``: what outside consumers of the public events need."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from services.cli import output as out
from services.cli.common import api

events_app = typer.Typer(no_args_is_help=True, help="The public events (tether.events.>) for outside consumers.")


@events_app.command("creds")
def events_creds(
    name: Annotated[str, typer.Argument(help="Who reads (a DNS label), e.g. grafana or audit-sink")],
    ttl_days: Annotated[float, typer.Option(help="Days the credentials are valid (at most 366)")] = 30.0,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Write the .creds file here (mode 0600) instead of stdout")
    ] = None,
) -> None:
    """Sign NATS credentials that may only read tether.events.> and replay the EVENTS stream (platform admins)."""
    res = api("POST", "/api/v1/events/credentials", json={"name": name, "ttl_days": ttl_days})
    hint = (
        f"valid until {res['expires_at']}; connect to {res['nats_url']} with --inbox-prefix {res['inbox_prefix']} "
        f"(replies come only there), e.g.\n  nats sub '{res['subjects']}' --creds FILE "
        f"--inbox-prefix {res['inbox_prefix']} -s {res['nats_url']}"
    )
    if file is None:
        sys.stdout.write(res["creds"])
        sys.stdout.flush()
        out.err.print(hint, highlight=False, soft_wrap=True)
        return
    fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(res["creds"])
    os.chmod(file, 0o600)  # an existing file keeps its old mode through O_CREAT
    out.console.print(f"credentials for [bold]{res['name']}[/] written to {file}; {hint}", highlight=False)
