"""The service layer: the only door to the store.

Slack, the CLI and the HTTP API all call :class:`promptship.services.core.Promptship`, whose
methods each own one transaction and call the plain functions of the modules here.

``Promptship`` is imported on first use, so the plain data of ``services.views`` (what the
CLI prints, locally or from a server) loads without the database and its dependencies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from promptship.services.core import Promptship

__all__ = ["Promptship"]


def __getattr__(name: str) -> object:
    if name == "Promptship":
        from promptship.services.core import Promptship

        return Promptship
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
