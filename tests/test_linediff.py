"""The bounded line diff behind ``/prompt diff`` and the approval message's evidence."""

from __future__ import annotations

import difflib
import time

from hypothesis import given
from hypothesis import strategies as st

from promptship.domain import linediff

lines = st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f", "g", "h"]), max_size=30)


def patch(a: list[str], diff: list[str]) -> list[str]:
    """Apply a unified diff's hunks to ``a``: what a reader reconstructs from it."""
    out: list[str] = []
    i = 0
    for line in diff[2:]:
        if line.startswith("@@"):
            start = int(line.split()[1][1:].split(",")[0])
            length = line.split()[1].split(",")
            start = start - 1 if len(length) == 1 or int(length[1]) else start
            out.extend(a[i:start])
            i = start
        elif line.startswith((" ", "-")):
            assert a[i] == line[1:-1], "context and removed lines are the old text's"
            if line.startswith(" "):
                out.append(a[i])
            i += 1
        else:
            out.append(line[1:-1])
    return out + a[i:]


@given(lines, lines)
def test_the_diff_turns_the_old_text_into_the_new_one(a: list[str], b: list[str]) -> None:
    diff = list(linediff.unified(a, b, "old", "new"))
    assert (diff == []) == (a == b)
    if diff:
        assert diff[:2] == ["--- old\n", "+++ new\n"]
        assert patch(a, diff) == b


@given(lines, lines)
def test_on_texts_of_unique_lines_it_is_difflibs_unified_diff(a: list[str], b: list[str]) -> None:
    a, b = list(dict.fromkeys(a)), list(dict.fromkeys(b))
    ours = list(linediff.unified(a, b, "old", "new"))
    theirs = [
        line if line.endswith("\n") else line + "\n"
        for line in difflib.unified_diff(a, b, "old", "new", lineterm="")
    ]
    assert patch(a, ours) == patch(a, theirs) == b


def test_crafted_repetitive_texts_diff_in_moments() -> None:
    """difflib's matcher takes minutes on these; the anchored diff stays linear-ish."""
    cases = [
        ("a\n" * 2000, "b\na\n" * 1000),
        ("x\ny\n" * 1500, "y\nx\n" * 1500),
        ("".join(f"{i % 7}\n" for i in range(3000)), "".join(f"{i % 5}\n" for i in range(3000))),
    ]
    for old, new in cases:
        started = time.process_time()
        diff = list(linediff.unified(old.splitlines(), new.splitlines(), "old", "new"))
        assert time.process_time() - started < 5, "a bounded diff, not a cubic one"
        assert patch(old.splitlines(), diff) == new.splitlines()
