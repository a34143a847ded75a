"""``promptship token``: bearer tokens for the API, issued per person or service.

Whoever holds the database is the admin here: the command acts straight on it, as
``--as``/``$PROMPTSHIP_USER`` (self-declared) or ``local-admin``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape

from promptship.cli.app import app
from promptship.cli.common import CommandGroup, emit, err, out, run_core, settings, state, when
from promptship.domain.identity import Actor, Scope, Via, parse_scope
from promptship.durations import parse_duration
from promptship.errors import BadInput
from promptship.services.views import IssuedToken, TokenView

token_app = CommandGroup(
    help="API tokens: issue one per person or service, list, revoke.", no_args_is_help=True
)
app.add_typer(token_app, name="token")


def _admin() -> Actor:
    who = (state.actor or settings().user or "").strip()
    return Actor(who or "local-admin", Via.LOCAL)


def _fail(message: str, hint: str) -> typer.Exit:
    if state.as_json:
        print(json.dumps({"error": "bad-input", "message": message, "hint": hint}))
    else:
        err.print(f"[bold red]error:[/] {escape(message)}")
        err.print(f"  {escape(hint)}")
    return typer.Exit(2)


def _scope(text: str | None) -> Scope | None:
    if text is None:
        return None
    try:
        return parse_scope(text)
    except ValueError as exc:
        raise _fail(str(exc), "e.g. --scope write") from None


def server_url() -> str:
    from promptship.services.tokens import SERVER_PLACEHOLDER

    return (settings().public_url or SERVER_PLACEHOLDER).rstrip("/")


def _kind(token: TokenView) -> str:
    return "service" if token.service else "person"


@token_app.command("create")
def token_create(
    user: Annotated[
        str | None,
        typer.Option(
            "--user", help="The person: a Slack user ID (U01ABCDEF) or a name under identities:."
        ),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="A service's name, e.g. ci-github.")
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(
            help="read, write or runtime (default write); approve and admin for a person "
            "only with local_decisions: true (else /prompt token in Slack)."
        ),
    ] = None,
    name: Annotated[str | None, typer.Option(help="What it is for, e.g. laptop.")] = None,
    expires: Annotated[
        str | None, typer.Option(help="Lifetime, e.g. 90d or 12h; default: until revoked.")
    ] = None,
) -> None:
    """Issue a token and print its secret, this once."""
    if (user is None) == (service is None):
        raise _fail(
            "give the token's holder: --user or --service, one of them",
            "promptship token create --user U01 | promptship token create --service ci-github",
        )
    chosen = _scope(scope)
    try:
        lifetime = parse_duration(expires) if expires is not None else None
    except BadInput as exc:
        raise _fail(exc.message, "e.g. --expires 90d") from None
    issued: IssuedToken = run_core(
        lambda core: core.create_token(
            core.resolve_identity(user) if user is not None else service or "",
            _admin(),
            service=service is not None,
            scope=chosen,
            name=name,
            expires_in=lifetime,
        )
    )
    env = {"PROMPTSHIP_SERVER": server_url(), "PROMPTSHIP_TOKEN": issued.secret}
    if emit({**issued.model_dump(mode="json"), "env": env}):
        return
    t = issued.token
    until = f"expires {when(t.expires_at)} UTC" if t.expires_at else "does not expire"
    out.print(
        f"token {t.id} ({t.prefix}…) for {escape(t.subject)} ({_kind(t)}), scope {t.scope}, {until}"
    )
    out.print(issued.secret, markup=False)
    out.print("[bold]store it now: it is shown once[/]")
    for key, value in env.items():
        out.print(f"export {key}={value}", markup=False)


@token_app.command("list")
def token_list(
    user: Annotated[
        str | None, typer.Option("--user", help="Only this person's (or service's) tokens.")
    ] = None,
    every: Annotated[bool, typer.Option("--all", help="Revoked tokens too.")] = False,
) -> None:
    """The tokens, one a line (UTC dates), never a secret; revoked ones with --all."""
    found = run_core(lambda core: core.list_tokens(user, include_revoked=every))
    if emit(found):
        return
    if not found:
        out.print("no tokens: promptship token create --user U01 (or --service ci-github)")
        return
    for t in found:
        name = f" “{escape(t.name)}”" if t.name else ""
        dates = [
            f"created {when(t.created_at)} by {escape(t.created_by)}",
            f"expires {when(t.expires_at)}" if t.expires_at else "no expiry",
            f"last used {when(t.last_used_at)}" if t.last_used_at else "never used",
        ]
        if t.revoked_at:
            dates.append(f"[red]revoked {when(t.revoked_at)}[/]")
        out.print(
            f"[bold]{t.id}[/] {t.prefix}… {escape(t.subject)} ({_kind(t)}) "
            f"[bold]{t.scope}[/]{name} · " + " · ".join(dates)
        )


@token_app.command("revoke")
def token_revoke(
    ref: Annotated[str, typer.Argument(help="The token's id or prefix (psk_…), see token list.")],
) -> None:
    """Revoke a token: it stops working within 5 seconds on every server."""
    revoked = run_core(lambda core: core.revoke_token(ref, _admin()))
    if emit(revoked):
        return
    out.print(f"revoked token {revoked.id} ({revoked.prefix}…) of {escape(revoked.subject)}")
