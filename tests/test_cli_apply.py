"""``promptship apply`` on the local database: staging's tests run here, as ``promote``
runs them; exit codes 0, 1 and 2."""

from __future__ import annotations

from pathlib import Path

import yaml

from promptship.testing.model_double import ModelDouble
from tests.conftest import prompt_yaml
from tests.test_cli import EXAMPLES, env, model, run  # noqa: F401 (fixtures)

NAME = "customer-support"


def test_apply_runs_staging_tests_here_and_exits_as_the_other_commands(
    env: Path,  # noqa: F811
    model: ModelDouble,  # noqa: F811
) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    target = env / "deployment.yaml"
    target.write_text(
        yaml.safe_dump(
            {NAME: {"dev": {"prompt_version": "2.1.0"}, "staging": {"prompt_version": "2.1.0"}}}
        )
    )
    code, out, err = run("--as", "U04", "apply", str(target), "--dry-run")
    assert code == 0, err
    assert f"{NAME} staging: — → 2.1.0: planned" in out
    code, out, err = run("--as", "U04", "apply", str(target))
    assert code == 0, err
    assert f"{NAME} dev: — → 2.1.0: done" in out and f"{NAME} staging: — → 2.1.0: done" in out
    code, out, _ = run("--as", "U04", "apply", str(target))
    assert code == 0 and out.count(": unchanged") == 2

    # production in the file, 2.1.0 not yet approved: a request opens, exit 0
    target.write_text(yaml.safe_dump({NAME: {"production": {"prompt_version": "2.1.0"}}}))
    code, out, _ = run("--as", "U04", "apply", str(target))
    assert code == 0 and "opened req-2" in out
    # an older version that never ran in staging is no rollback target: refused, exit 1
    old = env / "old.yaml"
    old.write_text(prompt_yaml(NAME, "1.0.0"))
    run("--as", "U09", "push", str(old))
    target.write_text(yaml.safe_dump({NAME: {"staging": {"prompt_version": "1.0.0"}}}))
    code, _, err = run("--as", "U03", "apply", str(target))
    assert code == 1 and "never ran in staging" in err
    # a version the registry does not know: bad input, exit 2, with its line
    target.write_text(yaml.safe_dump({NAME: {"staging": {"prompt_version": "0.1.0"}}}))
    code, _, err = run("--as", "U03", "apply", str(target))
    assert code == 2 and "line 3: customer-support has no version 0.1.0" in err
    code, _, err = run("--as", "U04", "apply", "missing.yaml")
    assert code == 2 and "missing.yaml: cannot read" in err


def test_apply_refuses_a_version_written_twice_and_deploys_neither(
    env: Path,  # noqa: F811
    model: ModelDouble,  # noqa: F811
) -> None:
    run("--as", "U09", "push", str(EXAMPLES))
    target = env / "deployment.yaml"
    target.write_text(
        f'{NAME}:\n  dev:\n    prompt_version: "1.0.0"\n    prompt_version: "2.1.0"\n'
    )
    code, out, err = run("--as", "U04", "apply", str(target))
    assert code == 2, (out, err)
    assert (
        f"deployment.yaml: line 4: {NAME}.dev.prompt_version: duplicate key (first at line 3)"
        in err
    )
    # nothing moved: dev is still empty
    target.write_text(f'{NAME}:\n  dev:\n    prompt_version: "2.1.0"\n')
    code, out, _ = run("--as", "U04", "apply", str(target), "--dry-run")
    assert code == 0 and f"{NAME} dev: — → 2.1.0: planned" in out
