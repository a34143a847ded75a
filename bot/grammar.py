"""The ``/prompt`` grammar: Slack command text to a typed command, or a helpful error.

Pure and total: any text gives either a ``Command`` or a ``BadInput`` whose message says
what was wrong and whose hint is the right form. ``name@version`` is accepted wherever
``name version`` is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from promptship.domain.identity import parse_scope
from promptship.domain.promptfile import NAME_RE, SEMVER_RE
from promptship.errors import BadInput
from promptship.services.deps import parse_request_code


class Verb(StrEnum):
    HELP = "help"
    STATUS = "status"
    SHOW = "show"
    DIFF = "diff"
    TEST = "test"
    PROMOTE = "promote"
    APPROVE = "approve"
    REJECT = "reject"
    CANCEL = "cancel"
    ROLLBACK = "rollback"
    BREAKGLASS = "breakglass"
    HISTORY = "history"
    SOAK = "soak"
    #: typed as ``soak restart``: a form of ``soak``, never a subcommand word of its own
    SOAK_RESTART = "soak restart"
    TOKEN = "token"


#: the right form and one example of every subcommand, in the order help shows them.
USAGE: dict[Verb, tuple[str, str]] = {
    Verb.HELP: ("/prompt help", "/prompt help"),
    Verb.STATUS: ("/prompt status [name]", "/prompt status customer-support"),
    Verb.SHOW: ("/prompt show <name> <version>", "/prompt show customer-support 2.1.0"),
    Verb.DIFF: ("/prompt diff <name> <v1> <v2>", "/prompt diff customer-support 2.0.0 2.1.0"),
    Verb.TEST: ("/prompt test <name> <version>", "/prompt test customer-support@2.1.0"),
    Verb.PROMOTE: (
        "/prompt promote <name> <version> <env> [reason...]",
        "/prompt promote customer-support 2.1.0 production Q3 tone update",
    ),
    Verb.APPROVE: (
        "/prompt approve <request-id> [comment...]",
        "/prompt approve req-42 looks good",
    ),
    Verb.REJECT: ("/prompt reject <request-id> <reason...>", "/prompt reject req-42 fails refunds"),
    Verb.CANCEL: ("/prompt cancel <request-id>", "/prompt cancel req-42"),
    Verb.ROLLBACK: (
        "/prompt rollback <name> <env> [version] [reason...]",
        "/prompt rollback customer-support production",
    ),
    Verb.BREAKGLASS: (
        "/prompt breakglass <name> <version> <reason...>",
        "/prompt breakglass customer-support 2.1.1 refunds leak card numbers",
    ),
    Verb.HISTORY: ("/prompt history <name> [env]", "/prompt history customer-support production"),
    Verb.SOAK: ("/prompt soak <name>", "/prompt soak customer-support"),
    Verb.SOAK_RESTART: (
        "/prompt soak restart <name> [version]",
        "/prompt soak restart customer-support",
    ),
    Verb.TOKEN: (
        "/prompt token [read|write|approve|runtime] · /prompt token revoke <id|psk_…>",
        "/prompt token write",
    ),
}

MAX_TEXT = 4000
_ENV_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Command:
    verb: Verb
    name: str | None = None
    version: str | None = None
    other_version: str | None = None
    environment: str | None = None
    request_id: int | None = None
    text: str | None = None  # reason or comment, as typed
    scope: str | None = None  # the scope of a token asked for
    token: str | None = None  # a token to revoke: its id or prefix


def usage(verb: Verb) -> str:
    return USAGE[verb][0]


class _Tokens:
    def __init__(self, verb: Verb, words: list[str], raw_rest: str) -> None:
        self.verb = verb
        self.words = words
        self.raw_rest = raw_rest  # the text after the verb, spacing kept, for reasons
        self.used = 0

    def fail(self, message: str) -> BadInput:
        return BadInput(message, hint=f"usage: {usage(self.verb)}")

    def next(self, what: str) -> str:
        if self.used >= len(self.words):
            raise self.fail(f"missing {what}")
        word = self.words[self.used]
        self.used += 1
        return word

    def peek(self) -> str | None:
        return self.words[self.used] if self.used < len(self.words) else None

    def rest(self) -> str | None:
        """Everything after the words used so far, as typed."""
        text = self.raw_rest
        for _ in range(self.used):
            text = text.lstrip()
            text = text[len(text.split(None, 1)[0]) :] if text.strip() else ""
        text = text.strip()
        return text or None

    def done(self) -> None:
        if self.used < len(self.words):
            extra = " ".join(self.words[self.used :])
            raise self.fail(f"unexpected {_quote(extra)}")

    def name(self) -> str:
        word = self.next("the prompt name")
        if not NAME_RE.fullmatch(word):
            raise self.fail(
                f"{_quote(word)} is not a prompt name (lowercase letters, digits, . _ -)"
            )
        return word

    def version(self, what: str = "the version") -> str:
        word = self.next(what)
        if not SEMVER_RE.fullmatch(word.removeprefix("v")):
            raise self.fail(f"{_quote(word)} is not a version like 2.1.0")
        return word.removeprefix("v")

    def name_and_version(self) -> tuple[str, str]:
        word = self.peek()
        if word is not None and "@" in word:
            self.used += 1
            name, _, version = word.partition("@")
            if not NAME_RE.fullmatch(name):
                raise self.fail(f"{_quote(name)} is not a prompt name")
            if not SEMVER_RE.fullmatch(version.removeprefix("v")):
                raise self.fail(f"{_quote(version)} is not a version like 2.1.0")
            return name, version.removeprefix("v")
        return self.name(), self.version()

    def environment(self) -> str:
        word = self.next("the environment")
        if not _ENV_RE.fullmatch(word):
            raise self.fail(f"{_quote(word)} is not an environment name")
        return word

    def request(self) -> int:
        word = self.next("the request id")
        try:
            return parse_request_code(word)
        except BadInput:
            raise self.fail(f"{_quote(word)} is not a request id like req-42") from None


_TOKEN_REF = re.compile(r"\d{1,12}|psk_[A-Za-z0-9_-]{4,12}")


def _token(t: _Tokens) -> Command:
    word = t.peek()
    if word is not None and word.lower() == "revoke":
        t.used += 1
        ref = t.next("the token's id or prefix")
        if not _TOKEN_REF.fullmatch(ref):
            raise t.fail(f"{_quote(ref)} is not a token id or prefix like psk_AbC12dEf")
        t.done()
        return Command(Verb.TOKEN, token=ref)
    scope = None
    if word is not None:
        t.used += 1
        try:
            scope = parse_scope(word).value
        except ValueError:
            raise t.fail(
                f"{_quote(word)} is not a token scope (read, write, approve or runtime)"
            ) from None
    t.done()
    return Command(Verb.TOKEN, scope=scope)


def _quote(text: str, limit: int = 60) -> str:
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return f"“{text}”"


def parse(text: str) -> Command:
    """Parse the text after ``/prompt``."""
    text = (text or "").strip()
    if len(text) > MAX_TEXT:
        raise BadInput(f"the command is too long ({len(text)} characters; at most {MAX_TEXT})")
    if not text:
        return Command(Verb.HELP)
    head, _, rest = text.partition(" ")
    head = head.split("\n", 1)[0]
    rest = text[len(head) :]
    try:
        verb = Verb(head.lower())
    except ValueError:
        known = ", ".join(v.value for v in Verb)
        raise BadInput(
            f"unknown subcommand {_quote(head)}", hint=f"try /prompt help; subcommands: {known}"
        ) from None
    t = _Tokens(verb, rest.split(), rest)
    if verb is Verb.HELP:
        return Command(verb)
    if verb is Verb.STATUS:
        name = t.name() if t.peek() is not None else None
        t.done()
        return Command(verb, name=name)
    if verb in (Verb.SHOW, Verb.TEST):
        name, version = t.name_and_version()
        t.done()
        return Command(verb, name=name, version=version)
    if verb is Verb.DIFF:
        name = t.name()
        old, new = t.version("the first version"), t.version("the second version")
        t.done()
        return Command(verb, name=name, version=old, other_version=new)
    if verb is Verb.PROMOTE:
        name, version = t.name_and_version()
        env = t.environment()
        return Command(verb, name=name, version=version, environment=env, text=t.rest())
    if verb is Verb.APPROVE:
        return Command(verb, request_id=t.request(), text=t.rest())
    if verb is Verb.REJECT:
        request_id = t.request()
        reason = t.rest()
        if reason is None:
            raise t.fail("a rejection needs a reason")
        return Command(verb, request_id=request_id, text=reason)
    if verb is Verb.CANCEL:
        request_id = t.request()
        t.done()
        return Command(verb, request_id=request_id)
    if verb is Verb.ROLLBACK:
        name = t.name()
        env = t.environment()
        candidate = t.peek()
        rollback_to: str | None = None
        if candidate is not None and SEMVER_RE.fullmatch(candidate.removeprefix("v")):
            rollback_to = t.version()
        return Command(verb, name=name, environment=env, version=rollback_to, text=t.rest())
    if verb is Verb.BREAKGLASS:
        name, version = t.name_and_version()
        reason = t.rest()
        if reason is None:
            raise t.fail("break-glass needs a written reason")
        return Command(verb, name=name, version=version, text=reason)
    if verb is Verb.HISTORY:
        name = t.name()
        history_env = t.environment() if t.peek() is not None else None
        t.done()
        return Command(verb, name=name, environment=history_env)
    if verb is Verb.TOKEN:
        return _token(t)
    if (t.peek() or "").lower() == "restart":  # so a prompt named "restart" is not shown here
        return _soak_restart(_Tokens(Verb.SOAK_RESTART, t.words[1:], ""))
    name = t.name()  # Verb.SOAK
    t.done()
    return Command(verb, name=name)


def _soak_restart(t: _Tokens) -> Command:
    version: str | None
    if "@" in (t.peek() or ""):
        name, version = t.name_and_version()
    else:
        name = t.name()
        version = t.version() if t.peek() is not None else None
    t.done()
    return Command(Verb.SOAK_RESTART, name=name, version=version)
