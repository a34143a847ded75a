"""``promptship import promptfoo`` writing its cases: into an existing prompt file (every
byte before them kept, vars checked against what the file declares), or to a new file that
never overwrites; a dry run writes nothing; sizes past the limits are refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptship.domain.promptfile import parse_prompt
from tests.promptfoo_helpers import config_with, copy, run

TARGET = """\
# The translator. Reviewed by the localisation team: keep this comment.
name: translate
version: "1.2.0"
model: claude-sonnet-4-5
system_prompt: |
  Translate the user's text into {{ language }}.  # not a comment: part of the prompt
variables:
  language: null   # required
tests:
  # the hand-written case
  - input: Thank you
    vars: {language: German}
    type: icontains
    expected: danke
"""


def test_into_appends_the_cases_and_keeps_every_byte_before_them(tmp_path: Path) -> None:
    config = copy("getting-started", tmp_path)
    target = tmp_path / "translate.yaml"
    target.write_text(TARGET)
    code, stdout, stderr = run(config, "--into", target)
    assert code == 0, stderr
    assert f"added 2 case(s) to {target}" in stdout
    text = target.read_text()
    assert text.startswith(TARGET)
    spec = parse_prompt(text)
    assert [(c.input, c.vars, c.expected) for c in spec.tests] == [
        ("Thank you", {"language": "German"}, "danke"),
        ("Hello world", {"language": "French"}, "Bonjour le monde"),
        ("Where is the library?", {"language": "Spanish"}, "Dónde está la biblioteca"),
    ]  # the target's prompt does not read input: it is only the user's turn
    code, stdout, _ = run(config, "--into", target)
    assert code == 0 and "added 0 case(s)" in stdout and "duplicates skipped: 2" in stdout
    assert target.read_text() == text


def test_into_refuses_vars_the_file_does_not_declare_naming_test_and_var(tmp_path: Path) -> None:
    config = copy("default-test", tmp_path)
    target = tmp_path / "translate.yaml"
    target.write_text(TARGET)
    code, _, stderr = run(config, "--into", target)
    assert code == 2 and target.read_text() == TARGET
    assert "does not declare vars these tests set" in stderr
    assert "tests[0]: tone" in stderr
    assert "variables: {tone: null}" in stderr


def test_into_refuses_a_file_whose_tests_are_not_last_and_says_how(tmp_path: Path) -> None:
    config = copy("getting-started", tmp_path)
    target = tmp_path / "translate.yaml"
    moved = (
        TARGET.replace("variables:\n  language: null   # required\n", "")
        + "variables:\n  language: null\n"
    )
    target.write_text(moved)
    code, _, stderr = run(config, "--into", target)
    assert code == 2 and target.read_bytes() == moved.encode()
    assert "tests: (line 7) is not the file's last key (variables follows at line 13)" in stderr
    assert "move tests:" in stderr


def test_into_a_file_without_tests_or_with_an_empty_list_and_crlf_lines(tmp_path: Path) -> None:
    config = copy("getting-started", tmp_path)
    head = TARGET[: TARGET.index("tests:")]
    for tail in ("", "tests: []  # none yet\n"):
        target = tmp_path / "translate.yaml"
        original = (head + tail).replace("\n", "\r\n")
        target.write_bytes(original.encode())
        code, _, stderr = run(config, "--into", target)
        assert code == 0, stderr
        data = target.read_bytes()
        assert b"\n" not in data.replace(b"\r\n", b"")  # its line ends stay CRLF
        assert data.startswith((head + tail.replace("[]", "")).replace("\n", "\r\n").encode())
        assert len(parse_prompt(data.decode()).tests) == 2


def test_a_new_file_never_overwrites(tmp_path: Path) -> None:
    config = copy("getting-started", tmp_path)
    out = tmp_path / "mine.yaml"
    out.write_text("mine\n")
    code, _, stderr = run(
        config, "--name", "t", "--version", "1.0.0", "--prompt", "1", "--out", out
    )
    assert code == 2 and out.read_text() == "mine\n"
    assert "exists: an import never overwrites" in stderr and "--into" in stderr


def test_dry_run_writes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = copy("csv", tmp_path)
    monkeypatch.chdir(tmp_path)
    code, stdout, _ = run(config, "--name", "qa", "--version", "1.0.0", "--dry-run")
    assert code == 0 and "would write 9 case(s) in qa.yaml" in stdout
    assert not (tmp_path / "qa.yaml").exists()


# -- bounds and the light install ------------------------------------------------------------


def test_array_vars_that_multiply_past_the_limit_are_refused(tmp_path: Path) -> None:
    many = {f"v{i}": [str(n) for n in range(10)] for i in range(5)}
    config = config_with(
        tmp_path, [{"type": "contains", "value": "x"}], vars={"input": "hi", **many}
    )
    code, _, stderr = run(config, "--name", "x", "--version", "1.0.0", "--dry-run")
    assert code == 2 and "its array vars make 100,000 tests; at most 10,000 fit" in stderr


def test_a_file_over_the_size_limit_is_refused_by_name(tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text("prompts: [Answer.]\nproviders: [openai:gpt-4.1]\ntests: file://big.csv\n")
    with (tmp_path / "big.csv").open("w") as big:
        big.write("input,__expected\n")
        big.write(("hello,contains: hi\n") * 600_000)
    code, _, stderr = run(config, "--name", "x", "--version", "1.0.0", "--dry-run")
    assert code == 2 and "big.csv is over the 10,485,760-byte limit" in stderr
