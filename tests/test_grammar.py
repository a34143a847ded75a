"""The /prompt grammar: every documented form parses; any other text gets a helpful error."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.grammar import USAGE, Command, Verb, parse
from promptship.errors import BadInput


@pytest.mark.parametrize(("form", "example"), list(USAGE.values()))
def test_every_help_example_parses(form: str, example: str) -> None:
    assert isinstance(parse(example.removeprefix("/prompt ")), Command)


def test_name_at_version_is_accepted_wherever_name_version_is() -> None:
    a = parse("promote customer-support 2.1.0 production Q3 tone")
    b = parse("promote customer-support@2.1.0 production Q3 tone")
    assert a == b
    assert b == Command(
        Verb.PROMOTE, "customer-support", "2.1.0", None, "production", None, "Q3 tone"
    )
    assert parse("show cs@v1.0.0") == parse("show cs 1.0.0")
    assert parse("breakglass cs@1.0.1 outage now").text == "outage now"


def test_reasons_are_kept_as_typed() -> None:
    command = parse("reject req-7 fails <!channel>  on   mobile")
    assert command.request_id == 7 and command.text == "fails <!channel>  on   mobile"


def test_rollback_version_is_optional() -> None:
    assert parse("rollback cs production").version is None
    assert parse("rollback cs production 2.0.0 bad").version == "2.0.0"
    assert parse("rollback cs production bad answers").text == "bad answers"


@pytest.mark.parametrize(
    ("text", "message", "form"),
    [
        ("frobnicate", "unknown subcommand “frobnicate”", "/prompt help"),
        ("promote cs 2.1.0", "missing the environment", "/prompt promote <name> <version> <env>"),
        ("promote cs two staging", "“two” is not a version like 2.1.0", "/prompt promote"),
        (
            "approve 12abc",
            "“12abc” is not a request id like req-42",
            "/prompt approve <request-id>",
        ),
        ("reject req-1", "a rejection needs a reason", "/prompt reject <request-id> <reason...>"),
        ("breakglass cs 1.0.1", "break-glass needs a written reason", "/prompt breakglass"),
        ("status Bad_Name", "“Bad_Name” is not a prompt name", "/prompt status [name]"),
        ("cancel req-1 now", "unexpected “now”", "/prompt cancel <request-id>"),
    ],
)
def test_errors_say_what_was_wrong_and_the_right_form(text: str, message: str, form: str) -> None:
    with pytest.raises(BadInput) as err:
        parse(text)
    assert message in err.value.message
    assert form in (err.value.hint or "")


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_or_gets_a_helpful_error(text: str) -> None:
    try:
        command = parse(text)
    except BadInput as err:
        assert err.message and err.hint
    else:
        assert isinstance(command.verb, Verb)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([v.value for v in Verb]), st.lists(st.text(min_size=1, max_size=20), max_size=6)
)
def test_any_words_after_a_verb_parse_or_explain(verb: str, words: list[str]) -> None:
    try:
        parse(" ".join([verb, *words]))
    except BadInput as err:
        assert err.hint and ("usage: /prompt" in err.hint or "/prompt help" in err.hint)


def test_token_takes_a_scope_or_a_token_to_revoke() -> None:
    assert parse("token") == Command(Verb.TOKEN)
    assert parse("token Approve") == Command(Verb.TOKEN, scope="approve")
    assert parse("token admin").scope == "admin"  # parsed; the service refuses it
    assert parse("token revoke psk_AbC12dEf") == Command(Verb.TOKEN, token="psk_AbC12dEf")
    assert parse("token revoke 12") == Command(Verb.TOKEN, token="12")
    for text, message in [
        ("token owner", "“owner” is not a token scope"),
        ("token write now", "unexpected “now”"),
        ("token revoke", "missing the token's id or prefix"),
        ("token revoke laptop", "“laptop” is not a token id or prefix"),
    ]:
        with pytest.raises(BadInput) as err:
            parse(text)
        assert message in err.value.message and "/prompt token" in (err.value.hint or "")
