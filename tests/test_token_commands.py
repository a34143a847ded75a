"""``promptship token``: issue, list and revoke API tokens from the command line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptship.cli import app
from promptship.domain.identity import Scope
from promptship.services import Promptship, tokens
from promptship.services.tokens import TokenIdentity
from promptship.store.db import Database
from promptship.store.models import AuditEvent
from tests.conftest import TEST_POLICY, make_policy


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    policy = tmp_path / "promptship.yaml"
    policy.write_text(TEST_POLICY + "identities: {alice@acme.com: U0ALICE}\n")
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("PROMPTSHIP_CONFIG", str(policy))
    monkeypatch.setenv("PROMPTSHIP_PUBLIC_URL", "https://promptship.acme.test")
    monkeypatch.delenv("PROMPTSHIP_USER", raising=False)
    yield tmp_path


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def who_is(tmp: Path, secret: str) -> TokenIdentity | None:
    async def go() -> TokenIdentity | None:
        db = Database(f"sqlite+aiosqlite:///{tmp / 'cli.db'}")
        core = Promptship(db, make_policy())
        try:
            async with db.transaction() as session:
                return await tokens.authenticate(session, core.deps, secret)
        finally:
            await db.dispose()

    return asyncio.run(go())


def audit_actors(tmp: Path) -> list[tuple[str, str]]:
    async def go() -> list[tuple[str, str]]:
        from sqlalchemy import select

        db = Database(f"sqlite+aiosqlite:///{tmp / 'cli.db'}")
        try:
            async with db.reader() as session:
                rows = (await session.execute(select(AuditEvent))).scalars().all()
                return [(e.action, e.actor) for e in rows]
        finally:
            await db.dispose()

    return asyncio.run(go())


def test_create_prints_the_secret_once_with_how_to_use_it(env: Path) -> None:
    code, out, err = run("token", "create", "--user", "U01", "--name", "laptop", "--expires", "90d")
    assert code == 0, err
    lines = out.splitlines()
    secret = next(line for line in lines if line.startswith("psk_"))
    assert "store it now: it is shown once" in out
    assert "export PROMPTSHIP_SERVER=https://promptship.acme.test" in lines
    assert f"export PROMPTSHIP_TOKEN={secret}" in lines
    # a person: write by default here, since the local CLI cannot vouch for who U01 is
    assert "for U01 (person), scope write, expires" in out
    found = who_is(env, secret)
    assert found is not None and found.subject == "U01" and found.scope is Scope.WRITE

    code, out, err = run("token", "create", "--service", "ci-github", "--json")
    assert code == 0, err
    made = json.loads(out)
    assert made["token"]["scope"] == "write" and made["token"]["service"] is True
    assert made["env"]["PROMPTSHIP_TOKEN"] == made["secret"]
    # an e-mail mapped under identities: is that person
    code, out, _ = run("--as", "U07", "token", "create", "--user", "alice@acme.com", "--json")
    assert code == 0 and json.loads(out)["token"]["subject"] == "U0ALICE"
    assert audit_actors(env) == [
        ("token.created", "local-admin"),
        ("token.created", "local-admin"),
        ("token.created", "U07"),
    ]


def test_list_never_shows_a_secret_and_revoke_stops_a_token(env: Path) -> None:
    _, out, _ = run("token", "create", "--user", "U01", "--scope", "read", "--json")
    first = json.loads(out)
    _, out, _ = run("token", "create", "--service", "ci-github", "--name", "ci", "--json")
    second = json.loads(out)

    code, out, _ = run("token", "list")
    assert code == 0
    assert first["token"]["prefix"] in out and "ci-github" in out and "service" in out
    assert first["secret"] not in out and second["secret"] not in out
    code, out, _ = run("token", "list", "--user", "U01", "--json")
    assert [t["prefix"] for t in json.loads(out)] == [first["token"]["prefix"]]
    assert "secret" not in out

    code, out, err = run("token", "revoke", first["token"]["prefix"])
    assert code == 0, err
    assert f"revoked token {first['token']['id']}" in out
    assert who_is(env, first["secret"]) is None
    assert who_is(env, second["secret"]) is not None
    _, out, _ = run("token", "list", "--json")
    assert [t["id"] for t in json.loads(out)] == [second["token"]["id"]]
    _, out, _ = run("token", "list", "--all", "--json")
    listed = json.loads(out)
    assert [t["id"] for t in listed] == [first["token"]["id"], second["token"]["id"]]
    assert listed[0]["revoked_at"] is not None

    code, _, err = run("token", "revoke", str(first["token"]["id"]))
    assert code == 2 and "already revoked by local-admin" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--user", "U01", "--scope", "owner"], "unknown scope 'owner'"),
        (["--user", "alice"], "alice is not a Slack user ID"),
        (["--user", "U01", "--expires", "soon"], "not a duration: 'soon'"),
        (["--user", "U01", "--expires", "0d"], "lifetime must be positive"),
        (["--service", "ci-github", "--scope", "approve"], "never decide"),
        (["--service", "CI GitHub"], "is not a service name"),
        ([], "--user or --service, one of them"),
        (["--user", "U01", "--service", "ci"], "--user or --service, one of them"),
    ],
)
def test_bad_input_says_what_was_wrong_and_exits_2(
    env: Path, args: list[str], message: str
) -> None:
    code, out, err = run("token", "create", *args)
    assert code == 2 and message in err and "Traceback" not in out + err
    code, out, _ = run("token", "create", *args, "--json")
    assert code == 2 and message in json.loads(out)["message"]


def test_unknown_tokens_exit_2(env: Path) -> None:
    code, _, err = run("token", "revoke", "42")
    assert code == 2 and "no token 42" in err
    code, _, err = run("token", "revoke", "psk_nothere")
    assert code == 2 and "no token psk_nothere" in err
    code, _, err = run("token", "revoke", "laptop")
    assert code == 2 and "not a token id or prefix" in err


def test_one_shell_cannot_issue_itself_approve_tokens_for_two_people(env: Path) -> None:
    """The local CLI cannot tell who U_CAROL is, so it issues no deciding tokens: otherwise
    one shell would approve twice through the server, as Carol and as Dave."""
    for user, scope in (("U0CAROL", "approve"), ("U0DAVE", "admin")):
        code, out, err = run("token", "create", "--user", user, "--scope", scope)
        assert code == 1 and "Traceback" not in out + err
        assert f"the local CLI cannot vouch for who {user} is" in err
        assert "/prompt token" in err
    assert audit_actors(env) == []
    # what it may issue still works: service tokens and non-deciding person tokens
    for args in (
        ["--user", "U0CAROL", "--scope", "write"],
        ["--service", "ci", "--scope", "admin"],
    ):
        code, _, err = run("token", "create", *args)
        assert code == 0, err


def test_a_one_person_trial_issues_approve_tokens_from_the_cli(env: Path) -> None:
    (env / "promptship.yaml").write_text(TEST_POLICY + "local_decisions: true\n")
    code, out, err = run("token", "create", "--user", "U01")
    assert code == 0, err
    assert "for U01 (person), scope approve" in out
