"""The project's own promises: README set-up commands, CI, and the layering rules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("```sh\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line.strip()]


def test_readme_starts_with_exactly_two_setup_commands() -> None:
    head = (ROOT / "README.md").read_text().split("```sh", 1)[0]
    assert head.strip() == "# promptship", "the set-up commands come first"
    run, test = readme_commands()
    assert run.endswith("promptship serve")
    assert test.endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert readme_commands()[1] in ci.splitlines()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def _module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path, module: str, modules: set[str]) -> set[str]:
    """The promptship modules an import statement anywhere in ``path`` (function bodies too)
    names, except under ``if TYPE_CHECKING:``. ``from a import b`` names ``a.b`` when that
    is a module, else ``a``."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    pending: list[ast.AST] = [ast.parse(path.read_text())]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parent = package[: len(package) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
        pending.extend(ast.iter_child_nodes(node))
    return {name for name in names if name in modules and name != module}


def import_graph() -> dict[str, set[str]]:
    """promptship module -> the promptship modules it imports."""
    src = ROOT / "src"
    paths = {_module_name(p, src): p for p in (src / "promptship").rglob("*.py")}
    return {module: _runtime_imports(path, module, set(paths)) for module, path in paths.items()}


def test_no_promptship_module_takes_part_in_an_import_cycle() -> None:
    graph = import_graph()
    assert "promptship.services.core" in graph["promptship.services"], "the graph sees imports"
    cycles: list[list[str]] = []
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        for imported in sorted(graph[module]):
            if imported in path:
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in done:
                visit(imported, [*path, imported])
        done.add(module)

    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_bot_never_touches_the_store() -> None:
    for path in (ROOT / "bot").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith("sqlalchemy"), f"{path} imports {name}"
            assert not name.startswith("promptship.store"), f"{path} imports {name}"


def test_core_never_imports_the_bot() -> None:
    # server.py is the composition root: it mounts the Slack surface next to the API.
    root = ROOT / "src" / "promptship" / "server.py"
    for path in (ROOT / "src" / "promptship").rglob("*.py"):
        if path == root:
            continue
        assert not any(n == "bot" or n.startswith("bot.") for n in _imports(path)), path


def test_torch_is_pinned_to_the_cpu_build() -> None:
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"torch==2.13.0"' in pyproject
    assert "torch==2.13.0" in (ROOT / "Dockerfile").read_text()


def test_manifest_declares_what_the_bot_uses() -> None:
    import yaml

    manifest = yaml.safe_load((ROOT / "manifest.yml").read_text())
    commands = manifest["features"]["slash_commands"]
    assert [c["command"] for c in commands] == ["/prompt"]
    assert all(c["url"].endswith("/slack/events") for c in commands)
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["event_subscriptions"]["bot_events"] == ["app_home_opened"]
    assert "socket_mode_enabled" in settings
    assert manifest["features"]["app_home"]["home_tab_enabled"] is True
    assert set(manifest["oauth_config"]["scopes"]["bot"]) == {
        "commands",
        "chat:write",
        "usergroups:read",
        "users:read",
        "users:read.email",
    }
    # the web console's Sign in with Slack
    assert set(manifest["oauth_config"]["scopes"]["user"]) == {"openid", "profile", "email"}
    assert [u.rsplit("/", 2)[-2:] for u in manifest["oauth_config"]["redirect_urls"]] == [
        ["auth", "callback"]
    ]


@pytest.mark.slow
def test_lint_format_and_types_are_clean() -> None:
    """ruff and mypy (strict settings in pyproject.toml) over everything we ship."""
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    for command in (
        [str(bin_dir / "ruff"), "check", "src", "bot", "tests", "benchmarks"],
        [str(bin_dir / "ruff"), "format", "--check", "src", "bot", "tests", "benchmarks"],
        [str(bin_dir / "mypy"), "src", "bot"],
    ):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(command[:2])}:\n{done.stdout}{done.stderr}"


def test_the_readme_policy_example_is_valid() -> None:
    from promptship.config import parse_policy

    text = (ROOT / "README.md").read_text()
    block = text.split("The policy file (`promptship.yaml`)", 1)[1].split("```yaml\n", 1)[1]
    policy = parse_policy(block.split("```", 1)[0], "README.md")
    assert policy.drift_watch == "0 3 * * *" and policy.traffic.max_samples == 50_000


def test_nothing_refers_to_files_outside_the_repository() -> None:
    """Code and docs are self-contained: no tracked file names a document that only exists
    next to the repository (the names are spelled in pieces so this file does not)."""
    import subprocess

    outside = [f"{name}.md" for name in ("DESIGN", "SLACK", "STYLE")] + ["../" + "shared"]
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if listed.returncode == 0:
        files = [ROOT / name for name in listed.stdout.split("\0") if name]
    else:  # not a git checkout (an unpacked sdist): every file but caches and the venv
        skip = {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache"}
        files = [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]
    assert len(files) > 50
    hits = []
    for path in files:
        if not path.is_file():  # deleted in the working tree, not yet committed
            continue
        text = path.read_bytes().decode("utf-8", errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            hits += [
                f"{path.relative_to(ROOT)}:{number}: {name}" for name in outside if name in line
            ]
    assert hits == []


def test_the_manifest_comment_says_what_its_socket_mode_setting_does() -> None:
    import yaml

    text = (ROOT / "manifest.yml").read_text()
    comments = " ".join(line.lstrip("# ") for line in text.splitlines() if line.startswith("#"))
    assert yaml.safe_load(text)["settings"]["socket_mode_enabled"] is False  # HTTP by default
    assert "keep socket_mode_enabled: true" not in comments
    assert "HTTP mode, the default" in comments
    assert "set socket_mode_enabled: true" in comments and "SLACK_APP_TOKEN" in comments
