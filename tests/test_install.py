"""The light install: ``pip install promptship`` (no extra) is the client library and the
CLI against a server, without torch, sentence-transformers, Slack or the database; ``serve``
and the local commands then name the server extra (exit 2) instead of an ImportError.

The slow tests build the project's wheel and install it with its base dependencies into a
fresh virtual environment, as an application or a CI job would."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
import venv
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest

from promptship.cli.common import SERVER_MODULES
from promptship.config import Settings
from promptship.server import create_app
from promptship.services import Promptship
from promptship.store.db import Database
from promptship.testing.serve import ServerThread, free_port
from tests.conftest import make_policy, prompt_yaml
from tests.helpers import REQUESTER, case_results, slack

ROOT = Path(__file__).parent.parent
NAME = "customer-support"
APP, CI = "app-token-0123456789", "ci-token-0123456789"
INSTALL = "pip install 'promptship[server]'"


def requirements(extra: str) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"][extra])


def distributions(extra: str) -> set[str]:
    """The distribution names an extra of pyproject.toml requires, normalized."""
    names = {re.split(r"[^A-Za-z0-9._-]", r, maxsplit=1)[0] for r in requirements(extra)}
    return {re.sub(r"[._]", "-", name.lower()) for name in names}


def test_the_cli_knows_every_module_the_server_extra_brings() -> None:
    """A command that needs a server-extra module names the extra only if the CLI knows the
    module is one: every requirement of the extra (its import name) is in the list."""
    modules = {name.replace("-", "_") for name in distributions("server")}
    assert modules <= SERVER_MODULES, modules - SERVER_MODULES
    assert "promptship[server]" in requirements("test")  # the suite runs serve and local mode


def light_cli(*commands: list[str]) -> list[tuple[int, str, str]]:
    """Each ``promptship COMMAND`` (exit code, stdout, stderr), run from this checkout in one
    process where the server extra's modules cannot be imported, as in a base install."""
    code = textwrap.dedent(f"""
        import json, sys
        for name in {sorted(SERVER_MODULES)!r}:
            sys.modules[name] = None  # import raises ModuleNotFoundError, as when not installed
        import promptship.client
        from typer.testing import CliRunner
        from promptship.cli import app
        results = []
        for args in {list(commands)!r}:
            done = CliRunner().invoke(app, args, catch_exceptions=False)
            results.append((done.exit_code, done.stdout, done.stderr))
        print(json.dumps(results))
    """)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{ROOT}", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [tuple(result) for result in json.loads(done.stdout)]


def test_without_the_server_extra_the_cli_loads_and_local_commands_name_the_extra() -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    local = [["serve"], ["db", "upgrade"], ["list"], ["audit", "verify"], ["token", "list"]]
    shown, *refused, approve, remote = light_cli(
        ["--help"], *local, ["approve", "req-1"], ["approve", "req-1", "--server", closed]
    )
    assert shown[0] == 0, shown
    assert all(name in shown[1] for name in ("push", "serve", "token", "approve"))
    for args, (code, _, stderr) in zip(local, refused, strict=True):
        assert code == 2
        assert stderr == f"error: promptship {' '.join(args)} needs the server extra: {INSTALL}\n"
    assert approve[0] == 2  # it can act through a server: that is said too
    assert approve[2] == (
        f"error: promptship approve needs the server extra to act locally: {INSTALL}\n"
        "  or act through a server: --server URL (or PROMPTSHIP_SERVER)\n"
    )
    assert remote[0] == 2 and remote[2].startswith(f"error: cannot reach {closed}")


# -- the real install ------------------------------------------------------------------------


def _builds_without_isolation() -> bool:
    """This interpreter has what pyproject.toml's build-system asks (setuptools >= 68 with
    its own bdist_wheel), so the wheel builds here without downloading a build environment."""
    try:
        major, minor = (int(part) for part in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1)


def _run(command: list[str | Path]) -> subprocess.CompletedProcess[str]:
    # without PYTHONPATH: a checkout on it (src/promptship.egg-info) would look installed
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(c) for c in command], capture_output=True, text=True, timeout=600, env=env
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def light(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the project's wheel and its base dependencies only;
    its ``bin`` folder."""
    work = tmp_path_factory.mktemp("light-install")
    source = work / "source"  # a clean copy: no build/ or egg-info from earlier builds
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("src", "bot"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    isolation = ["--no-build-isolation"] if _builds_without_isolation() else []
    _run([*pip, "wheel", "--no-deps", *isolation, "-w", work / "wheels", source])
    (wheel,) = (work / "wheels").glob("promptship-*.whl")
    venv.create(work / "venv", with_pip=False)  # this pip installs into it: faster
    python = work / "venv" / "bin" / "python"
    _run([*pip, "--python", python, "install", wheel])
    return python.parent


def installed(bin_dir: Path) -> set[str]:
    listed = _run(
        [
            bin_dir / "python",
            "-c",
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))",
        ]
    )
    return {re.sub(r"[._]", "-", name.lower()) for name in listed.stdout.split()}


def site_packages_bytes(bin_dir: Path) -> int:
    (site,) = (bin_dir.parent / "lib").glob("python3*/site-packages")
    return sum(p.stat().st_size for p in site.rglob("*") if p.is_file())


def promptship(
    bin_dir: Path, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("PROMPTSHIP_") and k != "PYTHONPATH"
    }
    return subprocess.run(
        [str(bin_dir / "promptship"), *args],
        capture_output=True,
        text=True,
        env={**env, "COLUMNS": "200"},
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.slow
def test_the_base_install_leaves_torch_slack_and_the_database_out(light: Path) -> None:
    names = installed(light)
    assert "promptship" in names and "httpx" in names
    server_only = distributions("server") | {"slack-bolt", "sentence-transformers", "torch"}
    assert names.isdisjoint(server_only), names & server_only
    assert site_packages_bytes(light) < 100 * 2**20  # the server extra's torch alone is more


@pytest.mark.slow
def test_the_base_install_runs_the_cli_and_names_the_extra_for_serve(light: Path) -> None:
    assert promptship(light, "--version").stdout == "promptship 0.1.0\n"
    shown = promptship(light, "--help")
    assert shown.returncode == 0 and "push" in shown.stdout and "serve" in shown.stdout
    served = promptship(light, "serve")
    assert served.returncode == 2
    assert served.stderr == f"error: promptship serve needs the server extra: {INSTALL}\n"
    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = promptship(light, "push", str(ROOT / "examples" / "prompts"), "--server", closed)
    assert unreachable.returncode == 2
    assert unreachable.stderr.startswith(f"error: cannot reach {closed}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A promptship server on loopback: its URL and database URL."""
    db_url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    app = create_app(
        Settings(
            PROMPTSHIP_DATABASE_URL=db_url,
            PROMPTSHIP_API_TOKENS=f"runtime:app:{APP},write:ci:{CI}",
        ),
        make_policy(),
        workers=False,
    )
    with ServerThread(app) as served:
        yield served.url, db_url


def to_production(db_url: str, version: str) -> None:
    async def go() -> None:
        core = Promptship(Database(db_url), make_policy())
        try:
            await core.record_validation_run(NAME, version, case_results(10), slack(REQUESTER))
            await core.request_promotion(NAME, version, "staging", slack(REQUESTER))
            request = await core.request_promotion(NAME, version, "production", slack(REQUESTER))
            await core.approve(request.id, slack("U01"))
            await core.approve(request.id, slack("U02"))
        finally:
            await core.db.dispose()

    asyncio.run(go())


@pytest.mark.slow
def test_ci_and_an_app_work_against_a_server_with_the_base_install(
    light: Path, server: tuple[str, str], tmp_path: Path
) -> None:
    url, db_url = server
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "support.yaml").write_text(
        prompt_yaml(
            NAME, "1.0.0", system_prompt="Be kind to {{ who }}.", variables={"who": "everyone"}
        )
    )
    remote = ["--server", url, "--token", CI]
    pushed = promptship(light, "push", str(prompts), *remote)
    assert pushed.returncode == 0, pushed.stderr
    assert pushed.stdout.startswith(f"registered {NAME} 1.0.0 ")
    again = promptship(light, "push", str(prompts), *remote)
    assert again.returncode == 0 and again.stdout.startswith(f"unchanged {NAME} 1.0.0 ")

    to_production(db_url, "1.0.0")
    written = promptship(light, "export", "deployment.yaml", *remote, cwd=tmp_path)
    assert written.returncode == 0, written.stderr
    checked = promptship(light, "export", "deployment.yaml", "--check", *remote, cwd=tmp_path)
    assert checked.returncode == 0 and "deployment.yaml matches the live state" in checked.stdout

    app = textwrap.dedent(f"""
        from promptship.client import PromptClient
        with PromptClient({url!r}, token={APP!r}) as prompts:
            print(prompts.get_system_prompt({NAME!r}, "production"))
            print(prompts.get_system_prompt({NAME!r}, "production", who="Ada"))
    """)
    fetched = _run([light / "python", "-c", app])
    assert fetched.stdout == "Be kind to everyone.\nBe kind to Ada.\n"
