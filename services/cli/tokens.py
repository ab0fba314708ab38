"""``tether token list|create|revoke|rotate``: a user's API tokens (your own, or anyone's as an admin).

The ``token`` group is shared: with no subcommand it is the gateway's kubectl credential plugin
(``services/cli/kubeconfig.py``), so ``tether token --server URL`` keeps working beside these verbs.
"""

from __future__ import annotations

from typing import Annotated

import typer

from schemas.errors import InvalidInput
from schemas.units import parse_duration
from services.cli import output as out
from services.cli.common import OutputOpt, api, fail
from services.cli.output import Output

token_app = typer.Typer(help="API tokens: list, create another, revoke, rotate; and kubectl's credential plugin.")


@token_app.callback(invoke_without_command=True)
def token_group(
    ctx: typer.Context,
    server: Annotated[str, typer.Option(help="Plugin mode: the API the kubeconfig points at")] = "",
) -> None:
    """API tokens: list, create another, revoke, rotate.

    With no subcommand, kubectl's exec credential plugin (the gateway's ``tether token --server URL``,
    written into kubeconfigs by ``tether space|tenant kubeconfig``).
    """
    if ctx.invoked_subcommand is None:
        from services.cli.kubeconfig import token as exec_plugin

        exec_plugin(server)


UserOpt = Annotated[str | None, typer.Option("--user", "-u", help="Whose tokens (platform admins; default: yours)")]


def _user(user: str | None) -> str:
    return user or str(api("GET", "/api/v1/whoami")["user"])


def _show_new(res: dict[str, object], output: Output, verb: str) -> None:
    if out.structured(output, res):
        return
    info = res["info"]
    assert isinstance(info, dict)
    expires = info["expires_at"] or "never"
    out.err.print(
        f"token {info['id']} {verb} for {info['user']} (expires: {expires}); shown only once:", highlight=False
    )
    print(res["token"])


@token_app.command("list")
def token_list(user: UserOpt = None, output: OutputOpt = Output.table) -> None:
    """List API tokens (never the tokens themselves: their ids)."""
    items = api("GET", f"/api/v1/users/{_user(user)}/tokens")["items"]
    if out.structured(output, items):
        return
    out.table(
        ["ID", "NAME", "CREATED", "EXPIRES"],
        [[t["id"], t["name"] or "-", out.ago(t["created_at"]), t["expires_at"] or "never"] for t in items],
    )


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Option(help="What the token is for")] = "",
    expires_in: Annotated[str, typer.Option(help="Lifetime, e.g. 30d or 12h (default: until revoked)")] = "",
    user: UserOpt = None,
    output: OutputOpt = Output.table,
) -> None:
    """Create another API token (the others keep working). Printed once, on stdout."""
    try:
        ttl = parse_duration(expires_in) if expires_in else 0.0
    except InvalidInput as exc:
        fail(exc.description)
    res = api("POST", f"/api/v1/users/{_user(user)}/tokens", json={"name": name, "ttl": ttl})
    _show_new(res, output, "created")


@token_app.command("revoke")
def token_revoke(token_id: str, user: UserOpt = None, output: OutputOpt = Output.table) -> None:
    """Revoke one API token by id: it stops working at once."""
    res = api("DELETE", f"/api/v1/users/{_user(user)}/tokens/{token_id}")
    if not out.structured(output, res):
        out.console.print(f"token {token_id} revoked.", highlight=False)


@token_app.command("rotate")
def token_rotate(token_id: str, user: UserOpt = None, output: OutputOpt = Output.table) -> None:
    """Replace one API token: a new one with the same name and lifetime; the old one stops working now."""
    res = api("POST", f"/api/v1/users/{_user(user)}/tokens/{token_id}/rotate")
    _show_new(res, output, "rotated")
