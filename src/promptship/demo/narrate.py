"""The demo's narration: one line per step, with what happened and how long it took."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape


class StepFailed(Exception):
    """A step of the demo went wrong; ``step`` names it."""

    def __init__(self, step: str, message: str) -> None:
        super().__init__(message)
        self.step = step
        self.message = message


class Step:
    def __init__(self, title: str) -> None:
        self.title = title
        self.outcome = ""

    def done(self, outcome: str) -> None:
        """What happened, shown on the step's line when it ends."""
        self.outcome = outcome


class Narrator:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.started = time.monotonic()
        self.current: str | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @contextmanager
    def step(self, title: str) -> Iterator[Step]:
        """A step: a spinner while it runs (on a terminal), then its line. An exception
        other than ``StepFailed`` or Ctrl-C becomes a ``StepFailed`` naming the step."""
        step = Step(title)
        self.current = title
        began = time.monotonic()
        try:
            with self.console.status(f"{escape(title)} …", spinner="dots"):
                yield step
        except (StepFailed, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise StepFailed(title, f"{type(exc).__name__}: {exc}") from exc
        took = time.monotonic() - began
        self.console.print(
            f"[green]✓[/] [bold]{escape(title)}[/]: {escape(step.outcome)} [dim]({took:.1f} s)[/]"
        )
        self.current = None

    def detail(self, text: str) -> None:
        """A live line inside the running step (a soak cycle, a click)."""
        self.console.print(f"    [dim]·[/] {escape(text)}")

    def heading(self, text: str) -> None:
        self.console.print(f"\n[bold cyan]{escape(text)}[/]")
