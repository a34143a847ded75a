"""The assertion types added for suites brought from promptfoo: each passing and failing with
the reason a person reads, and their file-format checks."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptship.domain.promptfile import TestCase
from promptship.validation.assertions import check_text


def case(kind: str, expected: Any = None, **kw: Any) -> TestCase:
    return TestCase(input="q", type=kind, expected=expected, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "expected", "answer", "passed", "why"),
    [
        ("starts-with", "Sure", "  Sure, here it is.", True, ""),
        ("starts-with", "Sure", "Well, sure.", False, "expected the answer to start with 'Sure'"),
        ("contains-any", ["refund", "credit"], "You get a credit.", True, ""),
        (
            "contains-any",
            ["refund", "credit"],
            "You get a Credit.",
            False,
            "expected the answer to contain one of 'refund', 'credit'",
        ),
        ("icontains-any", ["refund", "credit"], "You get a CREDIT.", True, ""),
        ("contains-all", ["30 days", "refund"], "A refund within 30 days.", True, ""),
        (
            "contains-all",
            ["30 days", "refund"],
            "A refund soon.",
            False,
            "the answer lacks '30 days'",
        ),
        ("icontains-all", ["30 DAYS", "Refund"], "a refund within 30 days", True, ""),
        (
            "icontains-all",
            ["30 days", "refund", "receipt"],
            "A REFUND",
            False,
            "the answer lacks '30 days', 'receipt' (any case)",
        ),
        ("is-json", None, '{"ok": true}', True, ""),
        ("is-json", None, '```json\n{"ok": true}\n```', True, ""),
        ("is-json", None, "ok: true", False, "not valid JSON: Expecting value at position 0"),
        ("is-json", {"type": "object", "required": ["ok"]}, '{"ok": 1}', True, ""),
        (
            "is-json",
            {"type": "object", "required": ["ok"]},
            '{"no": 1}',
            False,
            "JSON does not match the schema: 'ok' is a required property",
        ),
    ],
)
def test_each_new_type_passes_and_fails(
    kind: str, expected: Any, answer: str, passed: bool, why: str
) -> None:
    result = check_text(case(kind, expected), answer)
    assert (result.passed, result.detail) == (passed, why)


def test_a_list_type_takes_a_list_not_text() -> None:
    with pytest.raises(ValueError, match=r"a list of non-empty texts .*e\.g\. \[refund, credit\]"):
        case("contains-all", "refund, 30 days")


@pytest.mark.parametrize(
    ("kind", "expected", "message"),
    [
        ("contains-any", [], "expected must be a list of non-empty texts"),
        ("contains-all", ["ok", ""], "expected must be a list of non-empty texts"),
        ("starts-with", None, "expected must be text for type: starts-with"),
        ("llm-rubric", "", "the rubric must not be empty"),
        ("is-json", {"type": "nonsense"}, "expected is not a valid JSON schema"),
        ("contains", "x", "threshold applies only to type: score and type: llm-rubric"),
    ],
)
def test_bad_expectations_are_refused_clearly(kind: str, expected: Any, message: str) -> None:
    extra = {"threshold": 0.5} if kind == "contains" else {}
    with pytest.raises(ValueError, match=message):
        case(kind, expected, **extra)


@given(
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=5),
    st.text(max_size=60),
)
def test_any_and_all_agree_with_their_definitions(items: list[str], answer: str) -> None:
    any_case = check_text(case("contains-any", items), answer)
    all_case = check_text(case("contains-all", items), answer)
    assert any_case.passed == any(item in answer for item in items)
    assert all_case.passed == all(item in answer for item in items)
    if all_case.passed:
        assert any_case.passed
