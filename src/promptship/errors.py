"""Errors a user can cause, each rendered once per surface (Slack, CLI, HTTP API).

Every error carries a message written for the person who caused it: what was wrong and,
where there is one, what would make it right.
"""

from __future__ import annotations


class PromptshipError(Exception):
    """Base class of user-facing errors."""

    #: CLI exit code for this kind of error.
    exit_code = 2
    #: HTTP status for the API's problem document.
    http_status = 400
    #: short machine-readable kind, used in problem documents and JSON output.
    kind = "error"
    #: when true, the unit of work commits what the operation changed before raising
    #: (used to fail closed: an expired request is recorded as expired, then refused).
    keeps_changes = False

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


def reason(exc: BaseException) -> str:
    """What a failure says to the person reading it: one of ours, its message; any other,
    its repr (its type and words)."""
    return exc.message if isinstance(exc, PromptshipError) else repr(exc)


class BadInput(PromptshipError):
    """The input is malformed: a bad file, name, version, duration or argument."""

    kind = "bad-input"


class NotFound(PromptshipError):
    """A prompt, version or request that does not exist."""

    kind = "not-found"
    http_status = 404


class Forbidden(PromptshipError):
    """The acting user lacks the role, or the action is never allowed for them."""

    kind = "forbidden"
    exit_code = 1
    http_status = 403


class Conflict(PromptshipError):
    """The request contradicts what is stored (e.g. same version, other content)."""

    kind = "conflict"
    http_status = 409


class GateRefused(PromptshipError):
    """A lifecycle move is not allowed now; the message names the gate and its remedy."""

    kind = "gate-refused"
    exit_code = 1
    http_status = 409


class RequestClosed(GateRefused):
    """The request is no longer open (expired, cancelled, rejected or promoted).

    Raised after the closing is recorded, so the request fails closed for everyone.
    """

    kind = "request-closed"
    keeps_changes = True


class Unavailable(PromptshipError):
    """Something promptship needs (the database) cannot be reached or did not answer in
    time; the message names it and the short reason."""

    kind = "unavailable"
    http_status = 503
