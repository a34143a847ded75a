"""``promptship import promptfoo``: configs in the shapes promptfoo's documentation gives
become prompt files that push, with no var or assert lost on the way; what promptship cannot
keep is refused (or, asked, dropped and counted); bad input is a message naming the test and
the assert, never a traceback."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from promptship.cli import app
from promptship.domain.promptfile import PromptSpec, load_prompt_file, parse_prompt
from promptship.domain.safe_load import load_yaml12
from promptship.errors import BadInput
from promptship.importers.promptfoo import Options, import_config
from promptship.importers.promptfoo_files import Files
from tests.promptfoo_helpers import FIXTURES, TYPES, config_with, copy, new_file, run
from tests.test_install import light_cli


def written(spec: PromptSpec, input_var: str) -> set[tuple[str, str, str, float | None]]:
    """What a prompt file's cases hold: (all vars with the input, type, expected, threshold)."""
    return {
        (
            json.dumps({**(case.vars or {}), input_var: case.input}, sort_keys=True),
            case.type.value,
            json.dumps(case.expected, sort_keys=True),
            case.threshold,
        )
        for case in spec.tests
    }


def reference(config: Path, input_var: str) -> set[tuple[str, str, str, float | None]]:
    """The same, read from an inline promptfoo config the way its documentation describes:
    defaultTest merged in, array vars expanded, assert values rendered with the vars."""
    raw = load_yaml12(config.read_text(), str(config))
    default = raw.get("defaultTest") or {}
    expected = set()
    for test in raw["tests"]:
        merged = {**default.get("vars", {}), **test.get("vars", {})}
        choices = [
            v if isinstance(v, list) and isinstance(v[0], str) else [v] for v in merged.values()
        ]
        inherited = (
            []
            if test.get("options", {}).get("disableDefaultAsserts")
            else default.get("assert", [])
        )
        for combo in itertools.product(*choices):
            values = dict(zip(merged, combo, strict=True))
            for assertion in [*inherited, *test["assert"]]:
                value = assertion["value"]
                if isinstance(value, str):
                    value = jinja2.Template(value).render(**values)
                threshold = assertion.get("threshold")
                if assertion["type"] == "similar" and threshold is None:
                    threshold = 0.8  # promptfoo's default
                expected.add(
                    (
                        json.dumps(values, sort_keys=True),
                        TYPES[assertion["type"]],
                        json.dumps(value, sort_keys=True),
                        threshold,
                    )
                )
    assert input_var in {name for test in raw["tests"] for name in test["vars"]}
    return expected


# -- the documentation's shapes ----------------------------------------------------------


def test_the_getting_started_example_asks_which_prompt_then_keeps_every_var(tmp_path: Path) -> None:
    config = copy("getting-started", tmp_path)
    code, _, stderr = run(
        config, "--name", "translate", "--version", "1.0.0", "--out", tmp_path / "t.yaml"
    )
    assert code == 2 and not (tmp_path / "t.yaml").exists()
    assert (
        "2 prompts" in stderr and "Convert this English to" in stderr and "--prompt INDEX" in stderr
    )
    spec = new_file("getting-started", tmp_path / "again", "--prompt", "2")
    assert spec.system_prompt == "Translate to {{language}}: {{input}}"
    assert (spec.model, spec.provider.value) == ("gpt-4.1", "openai-compatible")
    assert spec.variables == {"language": None, "input": None}  # the prompt reads input too
    assert [(c.input, c.vars) for c in spec.tests] == [
        ("Hello world", {"language": "French", "input": "Hello world"}),
        ("Where is the library?", {"language": "Spanish", "input": "Where is the library?"}),
    ]
    assert written(spec, "input") == reference(config, "input")


@pytest.mark.parametrize(
    ("name", "input_var"),
    [("default-test", "query"), ("yaml12", "input"), ("array-vars", "input"), ("chat", "question")],
)
def test_no_var_or_assert_is_lost_on_the_way(name: str, input_var: str, tmp_path: Path) -> None:
    spec = new_file(name, tmp_path)
    assert written(spec, input_var) == reference(
        FIXTURES / name / "promptfooconfig.yaml", input_var
    )


def test_default_test_vars_and_asserts_merge_under_the_tests_own(tmp_path: Path) -> None:
    spec = new_file("default-test", tmp_path)
    assert [(c.input, c.type.value, c.vars) for c in spec.tests] == [
        ("What's the weather like?", "llm-rubric", {"tone": "friendly", "language": "English"}),
        ("What's the weather like?", "not-contains", {"tone": "friendly", "language": "English"}),
        ("Bonjour !", "llm-rubric", {"tone": "friendly", "language": "French"}),
        ("Bonjour !", "starts-with", {"tone": "friendly", "language": "French"}),
        ("Tell me a joke", "icontains-any", {"tone": "dry", "language": "English"}),
    ]
    rubric = spec.tests[2]
    assert rubric.expected == "does not describe itself as an AI, and answers in French"
    assert rubric.threshold == 0.7
    assert spec.tests[4].description == "no default asserts"


def test_yaml_1_2_scalars_stay_what_promptfoo_reads(tmp_path: Path) -> None:
    spec = new_file("yaml12", tmp_path)
    first, second = spec.tests
    assert (first.input, first.vars, first.expected) == ("Yes", {"flag": "on", "code": 10}, "yes")
    assert (second.input, second.vars) == ("no", {"flag": "off", "code": 8})
    assert second.expected == "y"


def test_array_vars_make_one_case_per_combination_and_a_list_of_mappings_stays_whole(
    tmp_path: Path,
) -> None:
    spec = new_file("array-vars", tmp_path)
    assert len(spec.tests) == 6
    assert {(c.vars["language"], c.input) for c in spec.tests if c.vars} == {
        (lang, text)
        for lang in ("French", "German", "Spanish")
        for text in ("Hello world", "Good morning")
    }
    assert all(
        c.vars and c.vars["glossary"] == [{"term": "Acme"}, {"term": "Kettle"}] for c in spec.tests
    )
    assert {c.expected for c in spec.tests} == {"French", "German", "Spanish"}  # rendered


def test_a_chat_prompt_gives_the_system_prompt_and_few_shot_turns(tmp_path: Path) -> None:
    spec = new_file("chat", tmp_path)
    assert spec.system_prompt == "You are a helpful sports assistant. The year is {{ year }}."
    assert [(m.role, m.content) for m in spec.messages or []] == [
        ("user", "Who won the world series in 2019?"),
        ("assistant", "The Washington Nationals."),
    ]  # the last user turn was only {{ question }}: each case's input takes its place
    assert (spec.model, spec.provider.value, spec.temperature) == (
        "claude-sonnet-4-5-20250929",
        "anthropic",
        0.0,
    )
    assert spec.tests[0].input == "Who won the world series in 2020?"
    assert spec.tests[0].vars == {"year": 2020}


def test_csv_tests_with_expected_columns(tmp_path: Path) -> None:
    spec = new_file("csv", tmp_path)
    cases = [(c.description, c.type.value, c.expected, c.threshold) for c in spec.tests]
    assert cases == [
        ("capital", "contains", "Paris", None),
        ("capital", "score", "The capital of France is Paris", 0.7),
        ("sum", "exact", "4", None),
        ("sum", "regex", r"\b4\b", None),
        ("colors", "contains-any", ["red", "blue", "yellow, ish"], None),
        ("colors", "icontains-all", ["red", "blue"], None),
        ("json", "json-schema", {}, None),
        ("json", "llm-rubric", "Is valid JSON with an answer field", None),
        ("greeting", "score", "Hello, nice to meet you", 0.9),
    ]
    assert spec.tests[4].vars == {"question": "Name two primary colors", "topic": "art, color"}
    assert spec.variables == {"question": None, "topic": None}


def test_vars_and_assert_values_in_files_load_relative_to_the_config(tmp_path: Path) -> None:
    spec = new_file("vars-in-files", tmp_path)
    assert (spec.model, spec.temperature, spec.max_tokens) == (
        "claude-sonnet-4-5-20250929",
        0.2,
        800,
    )
    refund, from_file, *by_glob = spec.tests
    assert refund.vars == {
        "policy": "Items can be returned within 30 days of delivery.\nRefunds go to the original payment method.",
        "customer": '{"name":"Ada","plan":"Team","vip":"yes"}',  # a YAML file: its JSON text
    }
    assert (from_file.type.value, from_file.expected) == (
        "exact",
        "You have 30 days from delivery to return an item.",
    )
    assert [(c.input, c.type.value) for c in by_glob] == [
        ("Can I get a refund?", "json-schema"),
        ("Where is my order?", "json-schema"),
    ]
    assert by_glob[0].expected == {
        "type": "object",
        "required": ["answer"],
        "properties": {"answer": {"type": "string"}},
    }


# -- what promptship cannot keep -----------------------------------------------------------


def test_unsupported_asserts_and_keys_are_refused_in_one_message_naming_each(
    tmp_path: Path,
) -> None:
    config = copy("mixed", tmp_path)
    code, _, stderr = run(config, "--name", "m", "--version", "1.0.0", "--out", tmp_path / "m.yaml")
    assert code == 2 and not (tmp_path / "m.yaml").exists()
    for line in (
        "tests[0] ('short and on topic'): assert[1]: assertion type 'javascript'",
        "tests[0] ('short and on topic'): assert[2]: weight:",
        "tests[1] ('costs'): metadata:",
        "tests[1] ('costs'): assert[1]: assertion type 'cost'",
        "tests[1] ('costs'): assert[2]: assertion type 'not-regex'",
        "tests[1] ('costs'): assert[3]: assertion type 'assert-set'",
    ):
        assert line in stderr
    assert "--skip-unsupported" in stderr


def test_skip_unsupported_drops_them_and_counts_each_kind(tmp_path: Path) -> None:
    config = copy("mixed", tmp_path)
    out = tmp_path / "m.yaml"
    done = CliRunner().invoke(
        app,
        [
            "import",
            "promptfoo",
            str(config),
            "--name",
            "m",
            "--version",
            "1.0.0",
            "--out",
            str(out),
            "--skip-unsupported",
            "--json",
        ],
    )
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["skipped"] == {
        "assert key weight": 1,
        "assert-set": 1,
        "cost": 1,
        "javascript": 1,
        "not-regex": 1,
        "test key metadata": 1,
    }
    assert (report["cases"], report["tests_read"], report["types"]) == (
        3,
        2,
        {"contains-all": 1, "icontains": 1, "score": 1},
    )
    text = out.read_text()
    assert "# dropped (--skip-unsupported): assert key weight 1, assert-set 1" in text
    assert [c.type.value for c in parse_prompt(text).tests] == [
        "icontains",
        "score",
        "contains-all",
    ]


def test_malformed_asserts_each_get_a_message_with_the_test_and_assert_index(
    tmp_path: Path,
) -> None:
    config = config_with(
        tmp_path,
        [
            "contains: hi",
            42,
            {"value": "x"},
            {"type": "contains", "value": {"a": 1}},
            {"type": "regex", "value": "(unclosed"},
            {"type": "is-json", "value": {"type": "no-such-type"}},
            {"type": "similar", "value": "x", "threshold": 7},
        ],
    )
    code, _, stderr = run(config, "--name", "x", "--version", "1.0.0", "--out", tmp_path / "x.yaml")
    assert code == 2 and "Traceback" not in stderr
    assert "7 problems" in stderr
    for index, why in enumerate(
        (
            "an assert is a mapping such as {type: contains, value: ...}, not the text 'contains: hi'",
            "not the number 42",
            "the assert has no type:",
            "contains needs value: the expected text, not a mapping",
            "not a valid regular expression",
            "not a valid JSON schema",
            "threshold: 7 is outside 0 to 1",
        )
    ):
        assert f"tests[0]: assert[{index}]: " in stderr and why in stderr


def test_a_test_without_an_assert_or_the_input_is_named_not_dropped(tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        "prompts: [Answer.]\nproviders: [openai:gpt-4.1]\ntests:\n"
        "  - vars: {input: hi}\n    assert: [{type: contains, value: hello}]\n"
        "  - vars: {input: bye}\n"
        "  - vars: {other: x}\n    assert: [{type: contains, value: x}]\n"
    )
    code, _, stderr = run(
        config, "--name", "x", "--version", "1.0.0", "--input-var", "input", "--dry-run"
    )
    assert code == 2
    assert "tests[1]: has no assert" in stderr and "tests[2]: sets no 'input'" in stderr


def test_which_var_is_the_input_is_asked_when_it_cannot_be_told(tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        "prompts: ['Summarize {{ text }} in {{ language }}']\nproviders: [openai:gpt-4.1]\n"
        "tests:\n  - vars: {text: a long story, language: French}\n"
        "    assert: [{type: icontains, value: histoire}]\n"
    )
    code, _, stderr = run(config, "--name", "x", "--version", "1.0.0", "--dry-run")
    assert code == 2
    assert "which var is the user's turn? the tests set text, language" in stderr
    assert "--input-var NAME" in stderr
    code, stdout, _ = run(
        config, "--name", "x", "--version", "1.0.0", "--dry-run", "--input-var", "text"
    )
    assert code == 0 and "input var: text; vars kept: language, text" in stdout


# -- adding to a prompt file ---------------------------------------------------------------


def test_the_light_install_imports(tmp_path: Path) -> None:
    config = copy("csv", tmp_path)
    shown, done = light_cli(
        ["import", "promptfoo", "--help"],
        ["import", "promptfoo", str(config), "--name", "qa", "--version", "1.0.0", "--dry-run"],
    )
    assert shown[0] == 0 and "--skip-unsupported" in shown[1]
    assert done[0] == 0, done[2]


# -- never another exception -----------------------------------------------------------------

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
TYPE_NAMES = st.sampled_from(
    [
        *TYPES,
        "is-json",
        "contains-json",
        "regex",
        "contains-any",
        "icontains-all",
        "javascript",
        "assert-set",
        "not-contains",
        "not-equals",
        "similar:cosine",
        "",
    ]
) | st.text(max_size=10)
ASSERTS = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"type": TYPE_NAMES | VALUES},
        optional={
            "value": VALUES
            | st.sampled_from(["{{ input }}", "{{ nope }}", "file://x.txt", "{% if %}"]),
            "threshold": VALUES,
            "weight": VALUES,
        },
    ),
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(asserts=st.lists(ASSERTS, max_size=4), skip=st.booleans())
def test_any_assert_shaped_data_gives_cases_or_bad_input(
    asserts: list[Any], skip: bool, tmp_path: Path
) -> None:
    config = {
        "prompts": ["Answer the customer."],
        "providers": ["openai:gpt-4.1"],
        "tests": [{"vars": {"input": "hi"}, "assert": asserts}],
    }
    try:
        imported = import_config(config, Files(tmp_path), "config", Options(skip_unsupported=skip))
    except BadInput as exc:
        assert exc.message
        return
    assert imported.cases and all(case.input == "hi" for case in imported.cases)


def test_refs_globs_jsonl_and_vars_that_name_vars_read_as_promptfoo_runs_them(
    tmp_path: Path,
) -> None:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "a.yaml").write_text(
        "- vars: {topic: bananas, item: 'tweet about {{topic}}', input: go}\n"
        "  assert: [{type: icontains, value: '{{ topic }}'}]\n"
    )
    (tmp_path / "tests" / "b.jsonl").write_text(
        '{"vars": {"topic": "kettles", "item": "haiku about {{ topic }}", "input": "go"},'
        ' "assert": [{"type": "contains-json"}]}\n'
    )
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        "prompts: ['Write a {{item}}']\nproviders: [openai:gpt-4.1]\n"
        "assertionTemplates:\n  mentions: {type: icontains, value: '{{ topic }}'}\n"
        "tests:\n  - file://tests/*.yaml\n  - file://tests/b.jsonl\n"
        "  - vars: {topic: tea, item: ode, input: go}\n"
        "    assert: [{$ref: '#/assertionTemplates/mentions'}]\n"
    )
    imported = import_config(*_read(config), Options())
    assert [(c.vars, c.type.value, c.expected) for c in imported.cases] == [
        ({"topic": "bananas", "item": "tweet about bananas"}, "icontains", "bananas"),
        ({"topic": "kettles", "item": "haiku about kettles"}, "json-schema", {}),
        ({"topic": "tea", "item": "ode"}, "icontains", "tea"),
    ]
    assert any("contains-json became json-schema" in note for note in imported.notes)
    assert any("vars.item: filled in {{topic}}" in note for note in imported.notes)


def _read(config: Path) -> tuple[dict[str, Any], Files, str]:
    from promptship.importers.promptfoo import read_config

    raw, files = read_config(config)
    return raw, files, str(config)


def test_without_a_prompt_the_system_prompt_is_asked_for(tmp_path: Path) -> None:
    config = config_with(tmp_path, [{"type": "contains", "value": "hello"}])
    document = json.loads(config.read_text())
    del document["prompts"]
    config.write_text(json.dumps(document))
    code, _, stderr = run(config, "--name", "x", "--version", "1.0.0", "--dry-run")
    assert code == 2 and "no prompt to take the system prompt from" in stderr
    assert "--system-prompt TEXT" in stderr
    code, _, stderr = run(
        config, "--name", "x", "--version", "1.0.0", "--system-prompt", "Be brief.", "--dry-run"
    )
    assert code == 0, stderr
    code, _, stderr = run(config, "--into", tmp_path / "p.yaml", "--name", "x")
    assert code == 2 and "--name: for a new prompt file" in stderr


def test_a_temperature_over_anthropics_range_is_capped_with_a_note(tmp_path: Path) -> None:
    config = tmp_path / "promptfooconfig.yaml"
    config.write_text(
        "prompts: ['Answer: {{question}}']\n"
        "providers: [{id: 'anthropic:messages:claude-x', config: {temperature: 1.5}}]\n"
        "tests: [{vars: {question: hi}, assert: [{type: contains, value: hi}]}]\n"
    )
    out = tmp_path / "out.yaml"
    code, stdout, stderr = run(config, "--name", "t", "--version", "1.0.0", "--out", out)
    assert code == 0, stderr
    assert load_prompt_file(out).temperature == 1.0
    assert "temperature 1.5 is over the anthropic provider's 0 to 1: the file says 1" in stdout
