"""Prompt templates: rendering with declared variables and defaults, the checks push makes
(undeclared variables and syntax errors with their lines), and the sandbox's bounds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptship.domain.promptfile import parse_prompt
from promptship.domain.template import (
    MissingVariable,
    RenderError,
    render,
    render_prompt,
    resolve,
    template_problems,
)
from promptship.errors import BadInput

NAMES = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True).filter(
    lambda n: n not in {"true", "false", "none", "and", "or", "not", "in", "is", "if", "else"}
)


def prompt(system: str, variables: str = "", extra: str = "") -> str:
    return (
        'name: support\nversion: "1.0.0"\nmodel: m\n'
        + (f"variables: {variables}\n" if variables else "")
        + f"system_prompt: |\n{''.join('  ' + line + chr(10) for line in system.splitlines())}"
        + extra
    )


def test_defaults_fill_what_is_not_given_and_extras_are_ignored() -> None:
    rendered = render_prompt(
        "Helping {{ customer_name }} on {{ plan }}.",
        [{"role": "assistant", "content": "Hi {{ customer_name }}"}],
        {"customer_name": None, "plan": "free"},
        {"customer_name": "Ann", "unused": 1},
    )
    assert rendered.system == "Helping Ann on free."
    assert rendered.conversation("Help!") == [
        {"role": "assistant", "content": "Hi Ann"},
        {"role": "user", "content": "Help!"},
    ]


def test_a_missing_variable_is_named() -> None:
    with pytest.raises(MissingVariable, match="missing variables customer_name, region") as err:
        resolve({"customer_name": None, "plan": "free", "region": None}, {"plan": "pro"})
    assert err.value.names == ["customer_name", "region"]
    assert "customer_name=..." in (err.value.hint or "")


def test_push_names_file_key_line_and_variable() -> None:
    text = prompt("Hello {{ customer_name }}.\nYou are on {{ plann }}.", "{customer_name: null}")
    with pytest.raises(BadInput) as err:
        parse_prompt(text, "prompts/support.yaml")
    assert err.value.message == (
        "prompts/support.yaml: system_prompt, line 2 (file line 7): uses the variable 'plann', "
        "which variables: does not declare"
    )
    assert err.value.hint == "declare them, e.g. variables: {plann: null}"


def test_a_template_that_does_not_parse_is_refused_with_its_line() -> None:
    with pytest.raises(BadInput, match=r"system_prompt, line 3 .*not a valid template"):
        parse_prompt(prompt("a\nb\n{% if plan %}unclosed", "{plan: free}"), "p.yaml")


def test_the_content_hash_covers_the_template_not_a_rendering() -> None:
    one = parse_prompt(prompt("Hi {{ name }}", "{name: Ann}"))
    other = parse_prompt(prompt("Hi {{ name }}", "{name: Bob}"))
    same_text = parse_prompt(prompt("Hi Ann", ""))
    assert one.render().system == same_text.render().system == "Hi Ann\n"
    assert len({one.content_hash, other.content_hash, same_text.content_hash}) == 3


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{{ cycler.__init__.__globals__ }}", "unsafe"),
        ("{{ 'x' * 100000000 }}", "a repeated value over 1,000,000 characters"),
        ("{{ (['x' * 900000] * 1000)|join }}", "a repeated value over 1,000,000 characters"),
        ("{{ 2 ** 100000 }}", "an exponent over 64"),
        ("{{ lipsum(n=100000) }}", "'lipsum' is undefined"),
        ("{% for i in range(50000) %}x{% endfor %}", "a range of more than 10,000 items"),
        ("{{ '%5000000d' % 1 }}", "a % format with a width of a million or more"),
        ("{{ '{:5000000}'.format(1) }}", "a format width of a million or more"),
        ("{{ 'x'|center(100000000) }}", "a number over 1,000,000 passed to a call"),
        (
            "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
            "took more than 0.5 s of CPU to render",
        ),
    ],
)
def test_the_sandbox_refuses_escapes_and_work_without_bound(source: str, why: str) -> None:
    with pytest.raises(RenderError, match=re.escape(why)):
        render(source, {})


def test_ordinary_templates_render_as_jinja2_does() -> None:
    source = (
        "{{ items|join(', ') }} {% for i in range(3) %}{{ loop.index }}{% endfor %} "
        "{{ '%05d' % 3 }} {{ 'x'|center(5) }}|{{ 'Rate *this*: {}'.format(5) }}"
    )
    assert render(source, {"items": [1, 2]}) == "1, 2 123 00003   x  |Rate *this*: 5"


@given(st.dictionaries(NAMES, st.text(max_size=20), max_size=5), st.sets(NAMES, max_size=5))
def test_problems_are_exactly_the_undeclared_variables(
    values: dict[str, str], declared: set[str]
) -> None:
    source = " ".join(f"{{{{ {name} }}}}" for name in values)
    problems = template_problems(source, sorted(declared))
    assert {p.variable for p in problems} == set(values) - declared
    if not problems and values:
        assert render(source, values) == " ".join(values.values())


def test_a_version_from_before_templates_is_sent_as_written() -> None:
    legacy = 'Reply with JSON like {{ "ok": true }} and {% nothing %}.'
    for declared in (None, {}):
        rendered = render_prompt(legacy, [{"role": "user", "content": "{{ x }}"}], declared, {})
        assert rendered.system == legacy
        assert rendered.messages == [{"role": "user", "content": "{{ x }}"}]
    with pytest.raises(BadInput, match="uses the variable 'x'"):  # a new push is checked
        parse_prompt(prompt("Hi {{ x }}"))


def test_anthropic_temperature_is_bounded_at_push() -> None:
    with pytest.raises(BadInput, match="temperature 1.5 is over 1: the anthropic provider"):
        parse_prompt(prompt("Hi", extra="temperature: 1.5\n"))
    assert parse_prompt(prompt("Hi", extra="temperature: 1.5\nprovider: openai-compatible\n"))


def test_braces_meant_as_written_get_the_raw_hint() -> None:
    with pytest.raises(BadInput) as err:
        parse_prompt(prompt("Reply like the Handlebars example: Hello {{name}}!"), "p.yaml")
    assert err.value.hint == (
        "declare them, e.g. variables: {name: null}; if the braces are meant as written (e.g. "
        "an example in another template language), wrap that text in {% raw %}…{% endraw %}"
    )
    written = "Reply like the example: {% raw %}Hello {{name}}! {#id}{% endraw %}"
    assert parse_prompt(prompt(written)).render().system == (
        "Reply like the example: Hello {{name}}! {#id}\n"
    )


def test_an_unknown_filter_is_refused_at_push_not_a_traceback() -> None:
    with pytest.raises(BadInput, match=r"system_prompt, line 2 .*No filter named 'dump'"):
        parse_prompt(prompt("Hi\n{{ plan|dump }}", "{plan: free}"), "p.yaml")
