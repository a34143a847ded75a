"""The system prompt diff an approval request carries is bounded whatever the prompts hold:
adversarial repeated lines never make it cubic (it is rebuilt on every view of a request),
a change too large to diff here points at ``/prompt diff``, and the message renders it
within Slack's limits."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from bot.blocks.requests import request_message
from promptship.services import evidence
from promptship.services.views import RequestEvidence, RequestView
from promptship.testing.slack_double import block_problems

NOW = datetime(2026, 1, 1, tzinfo=UTC)
#: generous: a guard against a cubic blow-up (minutes), not a benchmark
BOUND_SECONDS = 2.0


@pytest.fixture(autouse=True)
def fresh_cache() -> Iterator[None]:
    evidence.prompt_diff.cache_clear()
    yield
    evidence.prompt_diff.cache_clear()


def adversarial() -> Iterator[tuple[str, str, str]]:
    yield "one line repeated vs interleaved", "a\n" * 800, "b\na\n" * 400
    yield "2,000 lines of it", "a\n" * 2000, "b\na\n" * 1000
    for n in (1000, 3000, 5000):
        k = max(1, n // 49)  # each line 49 times: under difflib's popularity cut
        old = "".join(f"{i % k}\n" for i in range(n))
        new = "".join(f"{i % k}\nz{i % k}\n" for i in range(n // 2))
        yield f"{n} lines, each repeated under the junk cut", old, new
        yield (
            f"{n} unique lines, every other one changed",
            "".join(f"{i}\n" for i in range(n)),
            "".join(f"{i}\n" if i % 2 else f"x{i}\n" for i in range(n)),
        )
        yield (
            f"{n} unique lines, reordered",
            "".join(f"{i}\n" for i in range(n)),
            "".join(f"{i}\n" for i in [*range(0, n, 2), *range(1, n, 2)]),
        )
    yield "200,000 characters of one-character lines", "a\n" * 100_000, "b\na\n" * 50_000


@pytest.mark.parametrize(
    ("label", "old", "new"), list(adversarial()), ids=[x[0] for x in adversarial()]
)
def test_an_adversarial_pair_of_prompts_is_diffed_quickly(label: str, old: str, new: str) -> None:
    began = time.perf_counter()
    diff = evidence.prompt_diff("1.0.0", old, new)
    took = time.perf_counter() - began
    assert took < BOUND_SECONDS, f"{label}: {took:.1f}s"
    assert diff.added or diff.removed or diff.too_large
    assert len(diff.lines) <= evidence.DIFF_LINES


def test_a_small_change_in_a_long_prompt_shows_only_that_change() -> None:
    old = [f"Rule {i}: be polite about topic {i}." for i in range(3000)]
    new = [*old[:1500], "Rule X: never promise refunds.", *old[1500:]]
    new[2500] = "Rule 2499: be brief about topic 2499."
    diff = evidence.prompt_diff("1.0.0", "\n".join(old), "\n".join(new))
    assert (diff.added, diff.removed, diff.too_large) == (2, 1, False)
    assert diff.lines == [
        "@@ line 1501 @@",
        "+Rule X: never promise refunds.",
        "@@ line 2500 @@",
        "-Rule 2499: be polite about topic 2499.",
        "+Rule 2499: be brief about topic 2499.",
    ]


def test_a_change_too_large_to_diff_points_at_the_full_diff() -> None:
    old = "".join(f"line {i}\n" for i in range(evidence.DIFF_MAX_LINES + 10))
    new = "".join(f"other {i}\n" for i in range(evidence.DIFF_MAX_LINES + 10))
    diff = evidence.prompt_diff("1.0.0", old, new)
    assert diff.too_large and diff.lines == [] and not diff.shown_all
    view = RequestView(
        id=7,
        code="req-7",
        prompt="support",
        version="1.1.0",
        content_hash="f" * 64,
        environment="production",
        kind="normal",
        state="open",
        requester="U01",
        author="alice",
        reason="",
        required_approvals=2,
        decisions=[],
        checks=[],
        created_at=NOW,
        expires_at=NOW + timedelta(days=3),
        closed_at=None,
        closed_by=None,
        close_reason=None,
        evidence=RequestEvidence(
            as_of=NOW, production_version="1.0.0", tests=None, soak=None, diff=diff
        ),
    )
    blocks = request_message(view).blocks
    assert block_problems(blocks, limit=50) == []
    text = json.dumps(blocks)
    assert "too large to show here: `/prompt diff support 1.0.0 1.1.0`" in text


def test_a_diff_line_with_backticks_stays_inside_its_code_block() -> None:
    hostile = "```\n*Approved* by <@U01> ````` `` x ```"
    diff = evidence.prompt_diff("1.0.0", "Be kind.", f"Be kind.\n{hostile}")
    view = RequestView(
        id=7, code="req-7", prompt="support", version="1.1.0", content_hash="f" * 64,
        environment="production", kind="normal", state="open", requester="U01",
        author="alice", reason="", required_approvals=2, decisions=[], checks=[],
        created_at=NOW, expires_at=NOW + timedelta(days=3), closed_at=None,
        closed_by=None, close_reason=None,
        evidence=RequestEvidence(
            as_of=NOW, production_version="1.0.0", tests=None, soak=None, diff=diff
        ),
    )  # fmt: skip
    [section] = [b for b in request_message(view).blocks if b.get("block_id") == "diff"]
    text = section["text"]["text"]
    assert text.count("```") == 2 and text.endswith("```")  # one block, opened and closed
    assert "&lt;@U01&gt;" in text
