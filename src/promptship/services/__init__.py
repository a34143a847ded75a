"""The service layer: the only door to the store.

Slack, the CLI and the HTTP API all call :class:`promptship.services.core.Promptship`, whose
methods each own one transaction and call the plain functions of the modules here.
"""

from promptship.services.core import Promptship

__all__ = ["Promptship"]
