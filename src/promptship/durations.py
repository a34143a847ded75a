"""Durations as written in policy files: ``90s``, ``15m``, ``1h``, ``7d``, ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta

from promptship.errors import BadInput

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])", re.ASCII)
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?[smhd])+", re.ASCII)


def parse_duration(value: str | int | float | timedelta) -> timedelta:
    """Parse a duration; bare numbers are seconds. Raises BadInput on anything else."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise BadInput(f"not a duration: {value!r}", hint="write e.g. 30s, 15m, 1h or 7d")
    if isinstance(value, int | float):
        if value < 0:
            raise BadInput(f"a duration cannot be negative: {value!r}")
        return timedelta(seconds=value)
    text = str(value).strip().lower().replace(" ", "")
    if text.isascii() and text.isdigit():
        return timedelta(seconds=int(text))
    if not _WHOLE.fullmatch(text):
        raise BadInput(
            f"not a duration: {value!r}", hint="write a number with s, m, h or d, e.g. 90s, 1h, 7d"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(text))
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """The shortest exact spelling of a duration, e.g. ``1h30m`` or ``45s``."""
    total = int(delta.total_seconds())
    if total == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, total = divmod(total, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts)
