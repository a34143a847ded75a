"""Prompt templates: a version's ``system_prompt`` and ``messages`` are Jinja2 templates
rendered with the variables it declares (``{{ customer_name }}``, ``{% if plan == "pro" %}``).

Rendering runs in Jinja2's immutable sandbox with strict undefined: a template cannot reach
Python internals or change its inputs, and a variable that was neither given nor has a
default is an error naming it, never an empty string. Jinja2's syntax is Nunjucks', so
promptfoo templates carry over. The sandbox also bounds what a template can build: repeated
strings and ranges are capped (``MAX_RENDERED_CHARS``), so a template cannot exhaust memory.

Checks at push (:func:`template_problems`) parse each template and name the line of every
variable it uses that the version does not declare.
"""

from __future__ import annotations

import functools
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from promptship.errors import BadInput

VARIABLE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_VARIABLES = 64
MAX_RENDERED_CHARS = 1_000_000
#: the text that marks template syntax; a text without any is its own rendering
_SYNTAX = ("{{", "{%", "{#")


class MissingVariable(BadInput):
    """A template needs a variable that was not given and has no default."""

    def __init__(self, names: Sequence[str], where: str = "") -> None:
        self.names = list(names)
        shown = ", ".join(self.names)
        plural = "s" if len(self.names) > 1 else ""
        prefix = f"{where}: " if where else ""
        super().__init__(
            f"{prefix}missing variable{plural} {shown}",
            hint=f"pass {', '.join(f'{n}=...' for n in self.names)} (no default is declared)",
        )


class RenderError(BadInput):
    """A template failed while rendering (a filter on the wrong type, a limit reached)."""


#: the most items ``range()`` gives in a template, and the longest a call may ask a text to
#: be (``center(N)``, ``"{:N}".format``, ``"%Nd" % x``)
MAX_RANGE = 10_000
#: CPU a rendering may take before it is stopped
MAX_RENDER_SECONDS = 0.5
#: a format width (or precision) of a million or more; for ``%``, also one given by argument
_WIDE = re.compile(r"\d{7,}")
_WIDE_PERCENT = re.compile(r"%[^a-zA-Z%]*?(\d{7,}|\*)")


def _refuse_big_ints(args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
    for value in (*args, *kwargs.values()):
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and abs(value) > MAX_RENDERED_CHARS
        ):
            raise SecurityError(f"a number over {MAX_RENDERED_CHARS:,} passed to a call")


def _repeated_size(seq: Any, times: int) -> int:
    if isinstance(seq, str):
        return len(seq) * times
    return sum(len(item) if isinstance(item, str) else 1 for item in seq) * times


class _Bounded(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with what can build a huge text checked before it is built:
    ``*`` on texts and lists, ``**``, ``%`` and ``format`` widths, numbers passed to calls
    and filters, ``range``. ``lipsum`` is gone; rendering has a CPU budget."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int) and abs(right) > 64:
            raise SecurityError("an exponent over 64 is not allowed in a template")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    if _repeated_size(seq, times) > MAX_RENDERED_CHARS:
                        raise SecurityError(
                            f"a repeated value over {MAX_RENDERED_CHARS:,} characters"
                        )
        if operator == "%" and isinstance(left, str) and _WIDE_PERCENT.search(left):
            raise SecurityError("a % format with a width of a million or more, or a * width")
        return super().call_binop(context, operator, left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _refuse_big_ints(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def wrap_str_format(self, value: Any) -> Any:
        """``"{:N}".format`` (the sandbox's own safe formatter), refused for a wide N."""
        receiver = getattr(value, "__self__", None)
        if (
            isinstance(receiver, str)
            and getattr(value, "__name__", "") in ("format", "format_map")
            and _WIDE.search(receiver)
        ):
            raise SecurityError("a format width of a million or more")
        return super().wrap_str_format(value)


def _bounded_filter(function: Any) -> Any:
    @functools.wraps(function)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _refuse_big_ints(args, kwargs)
        return function(*args, **kwargs)

    return bounded


def _range(*args: int) -> range:
    numbers = range(*args)
    if len(numbers) > MAX_RANGE:
        raise SecurityError(f"a range of more than {MAX_RANGE:,} items")
    return numbers


_ENV = _Bounded(
    undefined=StrictUndefined,
    autoescape=False,  # prompts are text, not HTML
    keep_trailing_newline=True,
)
_ENV.globals.pop("lipsum", None)
_ENV.globals["range"] = _range
_ENV.filters = {name: _bounded_filter(f) for name, f in _ENV.filters.items()}


class _OutOfTime(Exception):
    pass


def _render_within_budget(compiled: Any, values: Mapping[str, Any]) -> str:
    """Render with a CPU budget: a tracer on the template's own frames stops a rendering
    that loops for longer than ``MAX_RENDER_SECONDS`` (a loop with no output never reaches
    the size check)."""
    deadline = time.thread_time() + MAX_RENDER_SECONDS
    events = 0

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        nonlocal events
        if frame.f_code.co_filename != "<template>":
            return None
        events += 1
        if events % 256 == 0 and time.thread_time() > deadline:
            raise _OutOfTime
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        out: str = compiled.render(**values)
    finally:
        sys.settrace(previous)
    return out


@dataclass(frozen=True)
class TemplateProblem:
    """Why a template cannot be pushed: where (1-based line of the template) and what."""

    line: int
    message: str
    variable: str | None = None


def is_template(text: str) -> bool:
    return any(mark in text for mark in _SYNTAX)


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> Any:
    return _ENV.from_string(text)


def template_problems(text: str, declared: Sequence[str]) -> list[TemplateProblem]:
    """What stops ``text`` from rendering with the ``declared`` variables: a syntax error,
    or each undeclared variable it reads (once, at its first line)."""
    if not is_template(text):
        return []
    try:
        tree = _ENV.parse(text)
        # compiles it too: an unknown filter or test (``|dump``, Nunjucks-only) fails here
        undeclared = meta.find_undeclared_variables(tree) - set(declared)
    except TemplateSyntaxError as exc:  # TemplateAssertionError included
        return [TemplateProblem(exc.lineno or 1, f"not a valid template: {exc.message}")]
    problems = []
    for name in sorted(undeclared, key=lambda n: (_first_line(tree, n), n)):
        problems.append(
            TemplateProblem(
                _first_line(tree, name),
                f"uses the variable {name!r}, which variables: does not declare",
                variable=name,
            )
        )
    return problems


def _first_line(tree: nodes.Template, name: str) -> int:
    lines = [n.lineno for n in tree.find_all(nodes.Name) if n.name == name and n.ctx == "load"]
    return min(lines, default=1)


def variables_used(text: str) -> set[str]:
    """Every variable ``text`` reads (empty when it is not a template or does not parse)."""
    if not is_template(text):
        return set()
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(text)))
    except TemplateSyntaxError:  # TemplateAssertionError included
        return set()


def resolve(declared: Mapping[str, Any] | None, given: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values a rendering uses: each declared variable's given value, else its default.
    Variables given but not declared are ignored (an app may pass a superset across
    versions). Raises MissingVariable naming every declared variable with neither."""
    declared = declared or {}
    given = given or {}
    values: dict[str, Any] = {}
    missing = []
    for name, default in declared.items():
        if name in given and given[name] is not None:
            values[name] = given[name]
        elif default is not None:
            values[name] = default
        else:
            missing.append(name)
    if missing:
        raise MissingVariable(sorted(missing))
    return values


def render(text: str, values: Mapping[str, Any], where: str = "") -> str:
    """``text`` rendered with ``values`` (already resolved)."""
    if not is_template(text):
        return text
    try:
        out = _render_within_budget(_compile(text), values)
    except _OutOfTime:
        raise RenderError(
            f"{where + ': ' if where else ''}took more than {MAX_RENDER_SECONDS:g} s of CPU "
            "to render; simplify its loops"
        ) from None
    except UndefinedError as exc:
        # declared variables are all in ``values``: this is a name the template reads that
        # was never declared (a version pushed before templates were checked), or an
        # attribute of a value that it lacks
        raise RenderError(f"{where + ': ' if where else ''}{exc.message}") from None
    except SecurityError as exc:
        raise RenderError(f"{where + ': ' if where else ''}refused: {exc}") from None
    except TemplateSyntaxError as exc:
        raise RenderError(
            f"{where + ': ' if where else ''}line {exc.lineno}: not a valid template: {exc.message}"
        ) from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise RenderError(f"{where + ': ' if where else ''}cannot render: {exc}") from None
    if len(out) > MAX_RENDERED_CHARS:
        raise RenderError(
            f"{where + ': ' if where else ''}renders to {len(out):,} characters; the limit "
            f"is {MAX_RENDERED_CHARS:,}"
        )
    return out


@dataclass(frozen=True)
class Rendered:
    """A prompt ready to send: the system text and the turns that come before the user's."""

    system: str
    messages: list[dict[str, str]]

    def conversation(self, user: str) -> list[dict[str, str]]:
        """The messages to send for one user turn: the few-shot turns, then ``user``."""
        return [*self.messages, {"role": "user", "content": user}]


def render_prompt(
    system_prompt: str,
    messages: Sequence[Mapping[str, str]] | None,
    declared: Mapping[str, Any] | None,
    given: Mapping[str, Any] | None,
) -> Rendered:
    """A version rendered for one set of vars. Raises MissingVariable or RenderError.

    A version that declares no ``variables`` and whose text does not render (a version
    registered before templates, whose text holds ``{{`` as plain text) is sent as written:
    push refuses such a text now, so only those older versions can get here."""
    values = resolve(declared, given)
    if not declared:
        try:
            return _render_all(system_prompt, messages, values)
        except RenderError:
            return Rendered(
                system=system_prompt,
                messages=[
                    {"role": str(m["role"]), "content": str(m["content"])} for m in messages or ()
                ],
            )
    return _render_all(system_prompt, messages, values)


def _render_all(
    system_prompt: str, messages: Sequence[Mapping[str, str]] | None, values: dict[str, Any]
) -> Rendered:
    return Rendered(
        system=render(system_prompt, values, "system_prompt"),
        messages=[
            {
                "role": str(m["role"]),
                "content": render(str(m["content"]), values, f"messages[{i}]"),
            }
            for i, m in enumerate(messages or ())
        ],
    )


def template_text(
    system_prompt: str,
    messages: Sequence[Mapping[str, str]] | None,
    variables: Mapping[str, Any] | None,
) -> str:
    """A version's templates as one text to read and diff: the system prompt, then (when
    there are any) each few-shot turn and each variable with its default."""
    parts = [system_prompt.rstrip("\n")]
    if messages:
        parts.append("── messages ──")
        parts.extend(f"[{m['role']}] {m['content']}".rstrip("\n") for m in messages)
    if variables:
        parts.append("── variables ──")
        parts.extend(
            f"{name} (required)" if default is None else f"{name} = {json.dumps(default)}"
            for name, default in sorted(variables.items())  # PostgreSQL's JSONB keeps no order
        )
    return "\n".join(parts) + ("\n" if system_prompt.endswith("\n") or len(parts) > 1 else "")
