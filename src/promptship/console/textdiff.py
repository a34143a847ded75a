"""A side-by-side diff for the console, with the changed words of each changed line pair
marked, bounded like the request's evidence diff: the lines found once on each side anchor
it (:func:`promptship.domain.linediff.changes`, never cubic), and a changed region over
:data:`MAX_LINES` lines or :data:`MAX_CHARS` characters is not diffed but counted."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from itertools import zip_longest

from promptship.domain import linediff
from promptship.services.evidence import DIFF_GAP_LINES, DIFF_MAX_CHARS, DIFF_MAX_LINES

MAX_LINES = DIFF_MAX_LINES
MAX_CHARS = DIFF_MAX_CHARS
#: unchanged lines shown around each change
CONTEXT = 3
#: a line pair with more words than this is marked whole (the word matcher stays cheap)
MAX_WORDS = 200
#: the words one page compares in all; the line pairs past it are marked whole
WORD_BUDGET = 20_000

_TOKENS = re.compile(r"\s+|\w+|[^\w\s]")


@dataclass(frozen=True)
class Side:
    number: int | None  # 1-based, None: no line on this side
    #: (text, changed) pieces of the line
    pieces: list[tuple[str, bool]] = field(default_factory=list)


@dataclass(frozen=True)
class Row:
    kind: str  # equal, replace, delete, insert, skip (unchanged lines left out)
    old: Side
    new: Side
    skipped: int = 0


@dataclass(frozen=True)
class SideBySide:
    rows: list[Row]
    added: int
    removed: int
    too_large: bool = False

    @property
    def identical(self) -> bool:
        return not self.too_large and not self.added and not self.removed


def words(
    old: str, new: str, budget: list[int] | None = None
) -> tuple[list[tuple[str, bool]], list[tuple[str, bool]]]:
    """The two lines in pieces, the words that differ marked; ``budget`` (one number, the
    words still to compare on this page) is spent by what is compared."""
    a, b = _TOKENS.findall(old), _TOKENS.findall(new)
    cost = len(a) + len(b)
    if max(len(a), len(b)) > MAX_WORDS or (budget is not None and cost > budget[0]):
        return [(old, True)], [(new, True)]
    if budget is not None:
        budget[0] -= cost
    left: list[tuple[str, bool]] = []
    right: list[tuple[str, bool]] = []
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        same = tag == "equal"
        if i2 > i1:
            _add(left, "".join(a[i1:i2]), not same)
        if j2 > j1:
            _add(right, "".join(b[j1:j2]), not same)
    return left, right


def _add(pieces: list[tuple[str, bool]], text: str, changed: bool) -> None:
    if pieces and pieces[-1][1] == changed:
        pieces[-1] = (pieces[-1][0] + text, changed)
    else:
        pieces.append((text, changed))


def side_by_side(old: str, new: str, context: int = CONTEXT) -> SideBySide:
    a, b = old.splitlines(), new.splitlines()
    start, ra, rb = linediff.changed_region(a, b)
    if max(len(ra), len(rb)) > MAX_LINES or max(_chars(ra), _chars(rb)) > MAX_CHARS:
        return SideBySide([], added=len(rb), removed=len(ra), too_large=True)
    blocks = [
        (start + i1, start + i2, start + j1, start + j2)
        for i1, i2, j1, j2 in linediff.changes(ra, rb, DIFF_GAP_LINES)
    ]
    rows: list[Row] = []
    added = removed = 0
    budget = [WORD_BUDGET]
    i = j = 0  # the next line of each side not yet shown or skipped
    for i1, i2, j1, j2 in [*blocks, (len(a), len(a), len(b), len(b))]:
        _equal(rows, a, i, j, i1 - i, context, first=not rows, last=i1 == len(a))
        for gone, came in zip_longest(range(i1, i2), range(j1, j2)):
            if gone is not None and came is not None:
                left, right = words(a[gone], b[came], budget)
                rows.append(Row("replace", Side(gone + 1, left), Side(came + 1, right)))
            elif gone is not None:
                rows.append(Row("delete", Side(gone + 1, [(a[gone], True)]), Side(None)))
            elif came is not None:
                rows.append(Row("insert", Side(None), Side(came + 1, [(b[came], True)])))
        removed += i2 - i1
        added += j2 - j1
        i, j = i2, j2
    return SideBySide(rows, added=added, removed=removed)


def _equal(
    rows: list[Row], a: list[str], i: int, j: int, n: int, context: int, first: bool, last: bool
) -> None:
    """``n`` unchanged lines from ``a[i]`` (``b[j]``): the ``context`` next to a change."""
    if n <= 0:
        return
    head = 0 if first else min(context, n)
    tail = 0 if last else min(context, n - head)
    for k in range(head):
        rows.append(_same(a, i + k, j + k))
    if n - head - tail > 0:
        rows.append(Row("skip", Side(None), Side(None), skipped=n - head - tail))
    for k in range(n - tail, n):
        rows.append(_same(a, i + k, j + k))


def _same(a: list[str], i: int, j: int) -> Row:
    return Row("equal", Side(i + 1, [(a[i], False)]), Side(j + 1, [(a[i], False)]))


def _chars(lines: list[str]) -> int:
    return sum(len(x) for x in lines)
