"""The prompt file format (the README's "Writing prompts and suites"): parsing, errors that
name the file and key, hashing and version ordering. Property tests throw generated documents
and garbage at the parser."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from promptship.domain.promptfile import (
    SEMVER_RE,
    PromptSpec,
    find_prompt_files,
    load_prompt_file,
    parse_prompt,
    semver_key,
)
from promptship.domain.template import is_template
from promptship.errors import BadInput

EXAMPLE = """\
name: customer-support
version: "2.1.0"
model: claude-sonnet-4-5
temperature: 0.7
max_tokens: 500
system_prompt: |
  You are a helpful support agent...
tests:
  - input: "What is prompt versioning?"
    expected: "versioning"
    type: contains
  - input: "Summarise our refund policy"
    expected: "Refunds within 30 days of purchase"
    type: score
    threshold: 0.75
"""

names = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,20}", fullmatch=True)
numbers = st.integers(0, 40).map(str)
versions = st.builds(
    lambda a, b, c, pre: f"{a}.{b}.{c}" + (f"-{pre}" if pre else ""),
    numbers,
    numbers,
    numbers,
    st.one_of(st.none(), st.sampled_from(["alpha", "alpha.1", "beta.2", "rc.1", "0.3.7"])),
)
text = st.text(
    # YAML itself treats NEL, LS and PS as line breaks, so PyYAML's allow_unicode output
    # folds them; every other character must survive.
    alphabet=st.characters(
        blacklist_categories=("Cs",), blacklist_characters="\x00\x85\u2028\u2029"
    ),
    min_size=1,
    max_size=80,
).filter(lambda s: s.strip() == s and s != "")
cases = st.one_of(
    st.builds(
        lambda i, e, t: {"input": i, "expected": e, "type": t},
        text,
        text,
        st.sampled_from(["contains", "icontains", "exact"]),
    ),
    st.builds(lambda i: {"input": i, "expected": "", "type": "not-contains"}, text),
    st.builds(
        lambda i, e, th: {"input": i, "expected": e, "type": "score", "threshold": th},
        text,
        text,
        st.floats(0, 1, allow_nan=False),
    ),
    st.builds(lambda i: {"input": i, "expected": {"type": "object"}, "type": "json-schema"}, text),
)
documents = st.fixed_dictionaries(
    {
        "name": names,
        "version": versions,
        "model": st.sampled_from(["claude-sonnet-4-5", "llama3.1:8b", "gpt-4o-mini"]),
        "system_prompt": text.filter(lambda t: not is_template(t)),  # templates: test_template
    },
    optional={
        "temperature": st.floats(0, 2, allow_nan=False),
        "max_tokens": st.integers(1, 100_000),
        "provider": st.sampled_from(["anthropic", "openai-compatible"]),
        "description": text,
        "tests": st.lists(cases, max_size=5),
    },
).filter(  # the anthropic provider takes temperatures up to 1
    lambda d: d.get("provider", "anthropic") != "anthropic" or d.get("temperature", 1.0) <= 1
)


def test_the_design_example_parses() -> None:
    spec = parse_prompt(EXAMPLE, "prompts/customer-support.yaml")
    assert (spec.name, spec.version, spec.model) == (
        "customer-support",
        "2.1.0",
        "claude-sonnet-4-5",
    )
    assert [c.type.value for c in spec.tests] == ["contains", "score"]
    assert spec.tests[1].effective_threshold == 0.75 and spec.tests[0].effective_threshold == 0.8
    assert spec.system_prompt == "You are a helpful support agent...\n"


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_valid_document_round_trips_through_yaml(doc: dict[str, Any]) -> None:
    spec = parse_prompt(yaml.safe_dump(doc, allow_unicode=True))
    assert spec.name == doc["name"] and spec.version == doc["version"]
    assert spec.system_prompt == doc["system_prompt"]
    assert len(spec.tests) == len(doc.get("tests", []))
    # what we store re-parses to the same version with the same content hash
    again = parse_prompt(
        yaml.safe_dump({"name": spec.name, "version": spec.version, **spec.content()})
    )
    assert again == spec and again.content_hash == spec.content_hash


@settings(max_examples=200, deadline=None)
@given(documents, st.sampled_from(["system_prompt", "model", "temperature", "tests"]))
def test_the_content_hash_changes_with_the_content_and_only_with_it(
    doc: dict[str, Any], key: str
) -> None:
    spec = parse_prompt(yaml.safe_dump(doc))
    reordered = dict(reversed(list(doc.items())))
    assert (
        parse_prompt(yaml.safe_dump(reordered, sort_keys=False)).content_hash == spec.content_hash
    )
    changed = dict(doc)
    if key == "system_prompt":
        changed[key] = doc[key] + " Be brief."
    elif key == "model":
        changed[key] = doc[key] + "-latest"
    elif key == "temperature":
        changed[key] = round(doc.get("temperature", 1.0) / 2 + 0.01, 3)
    else:
        changed["tests"] = [*doc.get("tests", []), {"input": "q", "expected": "a", "type": "exact"}]
    assert parse_prompt(yaml.safe_dump(changed)).content_hash != spec.content_hash


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_any_text_parses_or_is_refused_with_the_source_named(garbage: str) -> None:
    try:
        parse_prompt(garbage, "prompts/x.yaml")
    except BadInput as refused:
        assert str(refused).startswith("prompts/x.yaml: ")


@settings(max_examples=200, deadline=None)
@given(documents, st.data())
def test_a_broken_key_is_named_by_its_path(doc: dict[str, Any], data: st.DataObject) -> None:
    breakage = data.draw(
        st.sampled_from(
            [
                ("version", 2.1, "version"),
                ("version", "v2", "version"),
                ("name", "Customer Support", "name"),
                ("temperature", 3.5, "temperature"),
                ("max_tokens", 0, "max_tokens"),
                ("provider", "bedrock", "provider"),
                ("tempreature", 0.5, "tempreature"),
                ("tests", [{"input": "q", "expected": "a", "type": "contain"}], "tests[0].type"),
                ("tests", [{"input": "q", "expected": "(", "type": "regex"}], "tests[0]"),
                (
                    "tests",
                    [{"input": "q", "expected": "a", "type": "exact", "threshold": 0.5}],
                    "tests[0]",
                ),
                (
                    "tests",
                    [{"input": "q", "expected": {"type": 5}, "type": "json-schema"}],
                    "tests[0]",
                ),
                ("tests", [{"input": "", "expected": "a", "type": "exact"}], "tests[0].input"),
            ]
        )
    )
    key, value, path = breakage
    broken = {**doc, key: value}
    with pytest.raises(BadInput) as refused:
        parse_prompt(yaml.safe_dump(broken), "prompts/support.yaml")
    assert f"prompts/support.yaml: {path}" in str(refused.value)


def test_error_messages_say_what_is_wrong_and_the_right_form() -> None:
    cases = {
        "version: 2.1": 'write the version as text in quotes, e.g. "2.1.0"',
        "tempreature: 0.5": "tempreature: unknown key (check its spelling)",
        "provider: bedrock": "unknown value 'bedrock' (expected 'anthropic' or 'openai-compatible')",
    }
    base = yaml.safe_load(EXAMPLE)
    for line, message in cases.items():
        key, value = line.split(": ")
        doc = {**base, key: yaml.safe_load(value)}
        with pytest.raises(BadInput, match=None) as refused:
            parse_prompt(yaml.safe_dump(doc), "p.yaml")
        assert message in str(refused.value), str(refused.value)
    with pytest.raises(BadInput, match="not valid YAML"):
        parse_prompt("name: [unclosed", "p.yaml")
    with pytest.raises(BadInput, match="a prompt file is a mapping"):
        parse_prompt("- just\n- a list\n", "p.yaml")


def test_files_are_found_below_directories_and_bad_paths_are_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "one.yaml").write_text(EXAMPLE)
    (tmp_path / "two.yml").write_text(EXAMPLE.replace("2.1.0", "2.2.0"))
    (tmp_path / "notes.txt").write_text("not a prompt")
    found = find_prompt_files([tmp_path])
    assert [p.name for p in found] == ["one.yaml", "two.yml"]
    assert load_prompt_file(found[1]).version == "2.2.0"
    with pytest.raises(BadInput, match="missing.yaml"):
        find_prompt_files([tmp_path / "missing.yaml"])
    (tmp_path / "latin.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(BadInput, match="not UTF-8"):
        load_prompt_file(tmp_path / "latin.yaml")


SEMVER_ORDER = [
    "1.0.0-alpha",
    "1.0.0-alpha.1",
    "1.0.0-alpha.beta",
    "1.0.0-beta",
    "1.0.0-beta.2",
    "1.0.0-beta.11",
    "1.0.0-rc.1",
    "1.0.0",
    "1.0.1",
    "1.2.0",
    "1.10.0",
    "2.0.0",
]


def test_versions_sort_by_semver_precedence() -> None:
    shuffled = SEMVER_ORDER[:]
    random.Random(7).shuffle(shuffled)
    assert sorted(shuffled, key=semver_key) == SEMVER_ORDER  # the semver.org 2.0.0 example
    assert semver_key("1.0.0+build.5") == semver_key("1.0.0")


@given(versions, versions)
def test_semver_order_is_a_total_order_consistent_with_the_numbers(a: str, b: str) -> None:
    assert SEMVER_RE.fullmatch(a) and SEMVER_RE.fullmatch(b)
    ka, kb = semver_key(a), semver_key(b)
    assert (ka < kb) + (ka > kb) + (ka == kb) == 1
    core_a = tuple(int(x) for x in a.split("-")[0].split("."))
    core_b = tuple(int(x) for x in b.split("-")[0].split("."))
    if core_a != core_b:
        assert (ka < kb) == (core_a < core_b)
    elif "-" in a and "-" not in b:
        assert ka < kb  # a pre-release comes before its release


def test_spec_is_immutable() -> None:
    spec = parse_prompt(EXAMPLE)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type is internal
        spec.model = "other"  # type: ignore[misc]
    assert isinstance(spec, PromptSpec)


def test_a_json_schema_whose_schema_uri_is_not_text_is_refused_not_a_crash() -> None:
    text = EXAMPLE.split("tests:")[0] + (
        "tests:\n  - {input: hi, type: json-schema, expected: {$schema: [1]}}\n"
    )
    with pytest.raises(BadInput, match=r"tests\[0\]: expected: \$schema must be a text"):
        parse_prompt(text, "p.yaml")
