"""The ``promptship`` command line: the same services as Slack and the API.

Exit codes: 0 ok, 1 refused (a gate, a permission, a closed request), 2 bad input
(a bad file or argument, an unknown name, a conflict). ``--json`` prints machine-readable
output for scripts; ``--json`` and ``--as`` go before or after the command.

A command group is one module: it adds commands to ``app`` (or makes a ``CommandGroup`` and
``app.add_typer``s it), uses ``common``'s helpers, and is imported below so it registers.
"""

import sys

try:
    # importing a command group's module registers its commands
    from promptship.cli import (  # noqa: F401
        audit,
        db,
        demo,
        deployments,
        doubles,
        imports,
        init,
        outbox,
        promotions,
        prompts,
        serve,
        status,
        tokens,
        traffic,
    )
    from promptship.cli.app import app
except KeyboardInterrupt:  # Ctrl-C while the (slow) imports run: no traceback
    print("interrupted", file=sys.stderr)
    sys.exit(130)

__all__ = ["app", "main"]


def main() -> None:
    """The ``promptship`` entry point. Ctrl-C anywhere ends it with exit code 130 and no
    traceback."""
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
