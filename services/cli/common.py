"""What every command shares: the API client, errors, the output option."""

from __future__ import annotations

from typing import Annotated, Any, NoReturn

import typer

from services.cli import output as out
from services.cli.client import ApiError, Client
from services.cli.config import NotLoggedIn, load_context
from services.cli.output import Output

OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, wide, json, yaml or name")]


def fail(message: str, code: int = 1) -> NoReturn:
    out.err.print(f"[red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


def client() -> Client:
    try:
        return Client(load_context())
    except NotLoggedIn as exc:
        fail(str(exc))
    except ApiError as exc:
        fail(exc.message)


def api(method: str, path: str, **kwargs: Any) -> Any:
    try:
        return client().request(method, path, **kwargs)
    except ApiError as exc:
        fail(exc.message)
