"""A line diff bounded whatever its input.

difflib's matcher is cubic in the worst case (repeated lines): two crafted 2,000-line texts
take it minutes. Here the lines found exactly once on each side anchor the diff (patience
style, n log n) and only the short gaps between anchors go through difflib.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator


def changed_region(a: list[str], b: list[str]) -> tuple[int, list[str], list[str]]:
    """Where ``a`` and ``b`` first differ, and what lies between their common first and
    last lines on each side (what a diff must look at)."""
    start = 0
    while start < min(len(a), len(b)) and a[start] == b[start]:
        start += 1
    end = 0
    while end < min(len(a), len(b)) - start and a[-1 - end] == b[-1 - end]:
        end += 1
    return start, a[start : len(a) - end], b[start : len(b) - end]


def changes(a: list[str], b: list[str], gap: int = 100) -> list[tuple[int, int, int, int]]:
    """The changed blocks ``(i1, i2, j1, j2)`` of ``b`` against ``a``, patience style: the
    lines found once in each, in the longest order both keep, anchor the diff (n log n);
    only the gaps between anchors of at most ``gap`` lines go through
    difflib's matcher (cubic in the worst case, so only ever on small inputs); a larger gap
    is one replaced block."""
    count_a: dict[str, int] = {}
    for x in a:
        count_a[x] = count_a.get(x, 0) + 1
    where_b: dict[str, int] = {}
    count_b: dict[str, int] = {}
    for j, x in enumerate(b):
        count_b[x] = count_b.get(x, 0) + 1
        where_b[x] = j
    pairs = [(i, where_b[x]) for i, x in enumerate(a) if count_a[x] == 1 and count_b.get(x) == 1]
    anchors = [*_increasing(pairs), (len(a), len(b))]
    out: list[tuple[int, int, int, int]] = []
    i0 = j0 = 0
    for i, j in anchors:
        if i > i0 or j > j0:
            if max(i - i0, j - j0) > gap:
                out.append((i0, i, j0, j))
            else:
                matcher = difflib.SequenceMatcher(None, a[i0:i], b[j0:j])
                out.extend(
                    (i0 + x1, i0 + x2, j0 + y1, j0 + y2)
                    for tag, x1, x2, y1, y2 in matcher.get_opcodes()
                    if tag != "equal"
                )
        i0, j0 = i + 1, j + 1
    return out


def _increasing(pairs: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The longest run of ``pairs`` (sorted by their first item) whose second items rise."""
    tails: list[int] = []  # tails[k]: index in pairs of the smallest end of a run of k + 1
    back: list[int] = []
    for n, (_, j) in enumerate(pairs):
        k = _place(pairs, tails, j)
        back.append(tails[k - 1] if k else -1)
        if k == len(tails):
            tails.append(n)
        else:
            tails[k] = n
    run: list[tuple[int, int]] = []
    n = tails[-1] if tails else -1
    while n >= 0:
        run.append(pairs[n])
        n = back[n]
    return run[::-1]


def _place(pairs: list[tuple[int, int]], tails: list[int], j: int) -> int:
    lo, hi = 0, len(tails)
    while lo < hi:
        mid = (lo + hi) // 2
        if pairs[tails[mid]][1] < j:
            lo = mid + 1
        else:
            hi = mid
    return lo


def unified(
    a: list[str], b: list[str], fromfile: str, tofile: str, context: int = 3, gap: int = 100
) -> Iterator[str]:
    """``difflib.unified_diff``'s output format (lines with their ends) from :func:`changes`:
    bounded, where difflib's own is not."""
    blocks = changes(a, b, gap)
    if not blocks:
        return
    yield f"--- {fromfile}\n"
    yield f"+++ {tofile}\n"
    hunks: list[list[tuple[int, int, int, int]]] = []
    for block in blocks:  # blocks closer than two contexts share a hunk
        if hunks and block[0] - hunks[-1][-1][1] <= 2 * context:
            hunks[-1].append(block)
        else:
            hunks.append([block])
    for hunk in hunks:
        i_start = max(0, hunk[0][0] - context)
        j_start = max(0, hunk[0][2] - context)
        i_end = min(len(a), hunk[-1][1] + context)
        j_end = min(len(b), hunk[-1][3] + context)
        yield f"@@ -{_range(i_start, i_end)} +{_range(j_start, j_end)} @@\n"
        i = i_start
        for i1, i2, j1, j2 in hunk:
            yield from (f" {line}" for line in _ended(a[i:i1]))
            yield from (f"-{line}" for line in _ended(a[i1:i2]))
            yield from (f"+{line}" for line in _ended(b[j1:j2]))
            i = i2
        yield from (f" {line}" for line in _ended(a[i:i_end]))


def _range(start: int, stop: int) -> str:
    length = stop - start
    first = start + 1 if length else start
    return str(first) if length == 1 else f"{first},{length}"


def _ended(lines: list[str]) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in lines]
