"""Each assertion type, pass and fail, with the reason a person reads."""

from __future__ import annotations

import pytest

from promptship.domain.promptfile import AssertionType, TestCase
from promptship.validation.assertions import check, check_many, check_text
from promptship.validation.scoring import Scorer


def case(kind: str, expected: object, **kw: object) -> TestCase:
    return TestCase.model_validate({"input": "q", "type": kind, "expected": expected, **kw})


@pytest.mark.parametrize(
    ("kind", "expected", "good", "bad", "why"),
    [
        (
            "contains",
            "25 projects",
            "Team has 25 projects.",
            "Team has 25 Projects.",
            "to contain '25 projects'",
        ),
        ("icontains", "Refund", "no refunds", "no money back", "(any case)"),
        (
            "not-contains",
            "guaranteed",
            "reviewed in 2 days",
            "a guaranteed refund",
            "forbidden 'guaranteed'",
        ),
        ("exact", "  yes ", "yes\n", "yes!", "expected exactly 'yes'"),
        (
            "regex",
            r"(?i)order by\s+created_at",
            "ORDER BY created_at DESC",
            "order by name",
            "no match for the pattern",
        ),
    ],
)
async def test_text_assertions(kind: str, expected: str, good: str, bad: str, why: str) -> None:
    assert (await check(case(kind, expected), good)).passed
    failed = await check(case(kind, expected), bad)
    assert not failed.passed and why in failed.detail


async def test_json_schema_accepts_fenced_json_and_explains_mismatches() -> None:
    schema = {
        "type": "object",
        "required": ["sql"],
        "properties": {"sql": {"type": ["string", "null"]}},
    }
    assert (await check(case("json-schema", schema), '{"sql": "select 1"}')).passed
    assert (await check(case("json-schema", schema), 'Here:\n```json\n{"sql": null}\n```')).passed
    missing = await check(case("json-schema", schema), '{"query": 1}')
    assert not missing.passed and "'sql' is a required property" in missing.detail
    broken = await check(case("json-schema", schema), "not json")
    assert not broken.passed and broken.detail.startswith("not valid JSON")


async def test_score_uses_the_threshold(scorer: Scorer) -> None:
    similar = case(
        "score", "Point production at the previous version of the prompt.", threshold=0.6
    )
    good = await check(
        similar, "Roll back by pointing production at the previous prompt version.", scorer
    )
    assert good.passed and good.score is not None and good.score >= 0.6
    bad = await check(similar, "Our office is closed on Sundays.", scorer)
    assert not bad.passed and "below the threshold 0.60" in bad.detail


async def test_a_batch_scores_every_score_case_in_one_pass(scorer: Scorer) -> None:
    before = scorer.encoded_texts
    batch = [(case("score", f"topic number {i}"), f"an answer about topic {i}") for i in range(10)]
    batch.append((case("contains", "x"), "x"))
    results = await check_many(batch, scorer)
    assert len(results) == 11 and results[-1].passed
    assert scorer.encoded_texts - before == 20  # ten answers, ten expected texts, once each


def test_an_answer_nested_beyond_any_parser_fails_the_json_schema_case_without_crashing() -> None:
    case = TestCase(input="q", expected={"type": "object"}, type=AssertionType.JSON_SCHEMA)
    result = check_text(case, "[" * 200_000 + "]" * 200_000)
    assert not result.passed and "nested too deep" in result.detail


@pytest.mark.parametrize(
    ("ref", "shown"),
    [
        ("#/definitions/answer", "'#/definitions/answer'"),
        ("https://schemas.example.com/answer.json", "'https://schemas.example.com/answer.json'"),
    ],
)
def test_a_schema_whose_reference_cannot_be_resolved_fails_its_case_saying_so(
    ref: str, shown: str
) -> None:
    schema = {"type": "object", "properties": {"ok": {"$ref": ref}}}
    result = check_text(case("json-schema", schema), '{"ok": true}')
    assert not result.passed
    assert result.detail == f"the schema's reference {shown} cannot be resolved"


def test_references_within_the_schema_are_followed() -> None:
    schema = {
        "$defs": {"flag": {"type": "boolean"}},
        "properties": {"ok": {"$ref": "#/$defs/flag"}},
    }
    assert check_text(case("json-schema", schema), '{"ok": true}').passed
    wrong = check_text(case("json-schema", schema), '{"ok": 1}')
    assert wrong.detail == "JSON does not match the schema: 1 is not of type 'boolean'"


def test_a_pattern_that_backtracks_without_end_fails_its_case_as_too_slow() -> None:
    # (a|aa)+ tries every way of splitting the a's before it gives up on the "!"
    result = check_text(case("regex", r"^(a|aa)+$"), "a" * 40 + "!")
    assert not result.passed
    assert result.detail.startswith("the pattern '^(a|aa)+$' is too slow: no result after 1s")


@pytest.mark.parametrize(
    ("pattern", "answer", "passed"),
    [
        (r"^(\w+\s?)*$", "Thanks for reaching out to support today!", False),
        (r"(?i)^thanks\b", "THANKS for waiting", True),
        (r"(?P<n>\d+) days", "within 30 days", True),
        (r"\bSKU-\d{4}\b", "order SKU-12345", False),
    ],
)
def test_patterns_read_as_python_reads_them(pattern: str, answer: str, passed: bool) -> None:
    assert check_text(case("regex", pattern), answer).passed is passed
