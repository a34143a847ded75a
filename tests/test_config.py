"""The policy file (promptship.yaml) and process settings: the README's keys work, and a bad
file is refused at start with the file, the key and the problem."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from promptship.config import Policy, Settings, load_policy, parse_policy
from promptship.durations import format_duration, parse_duration
from promptship.errors import BadInput
from promptship.store.db import create_engine

DESIGN_EXAMPLE = """
channel: C0PROMPTOPS          # where notifications and approval requests go
roles:
  approvers: [U01, U02, S0GROUP]   # Slack user IDs or user-group IDs (S...)
  oncall: [U03]
  stakeholders: []
environments:
  staging:   {min_pass_rate: 0.8}
  production: {approvals: 2, soak: 24h, max_divergence: 0.10, soak_interval: 1h, soak_sample: 1000}
breakglass: {approvals: 3, production_soak: 1h}
approval_expiry: 72h
"""


def test_the_design_example_is_a_valid_policy() -> None:
    policy = parse_policy(DESIGN_EXAMPLE)
    assert policy.channel == "C0PROMPTOPS"
    assert policy.roles.approvers == ["U01", "U02", "S0GROUP"]
    prod = policy.environments.production_policy
    assert (prod.approvals, prod.soak, prod.soak_interval) == (
        2,
        timedelta(hours=24),
        timedelta(hours=1),
    )
    assert policy.breakglass.production_soak == timedelta(hours=1)
    assert policy.approval_expiry == timedelta(hours=72)
    assert policy.environments.names == ("dev", "staging", "production")


def test_an_empty_file_means_the_documented_defaults() -> None:
    assert parse_policy("") == Policy()
    policy = Policy()
    assert policy.environments.staging_policy.min_pass_rate == 0.8
    assert policy.environments.production_policy.approvals == 2
    assert policy.environments.production_policy.max_divergence == 0.10
    assert policy.breakglass.approvals == 3


def test_environments_can_be_renamed_in_order() -> None:
    policy = parse_policy("environments: {qa: {min_pass_rate: 0.9}, live: {approvals: 3}}")
    envs = policy.environments
    assert envs.names == ("dev", "qa", "live")
    assert envs.staging_policy.min_pass_rate == 0.9 and envs.production_policy.approvals == 3
    three = parse_policy("environments: {sandbox: {}, pre: {}, prod: {}}").environments
    assert three.names == ("sandbox", "pre", "prod")
    with pytest.raises(BadInput, match="unknown environment 'staging'.*use one of: dev, qa, live"):
        envs.check("staging")


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("approval_expiry: soon", "promptship.yaml: approval_expiry: "),
        ("breakglass: {approvals: 0}", "promptship.yaml: breakglass.approvals: "),
        (
            "environments: {production: {soka: 24h}}",
            "promptship.yaml: environments.production.soka: unknown key (check its spelling)",
        ),
        (
            "environments: {live: {min_pass_rate: 1.5}, prod: {}}",
            "promptship.yaml: environments.live.min_pass_rate: ",
        ),
        ("roles: {approvers: U01}", "promptship.yaml: roles.approvers: "),
        ("groups: {G01: [U01]}", "user-group IDs start with S, got 'G01'"),
        ("chanel: C01", "promptship.yaml: chanel: unknown key (check its spelling)"),
        ("environments: {a: {}, b: {}, c: {}, d: {}}", "list the environments in order"),
        (
            "environments: {dev: {approvals: 2}}",
            "promptship.yaml: environments.dev.approvals: unknown key (check its spelling)",
        ),
        (
            "environments: {sandbox: {follow_latest: 3}, pre: {}, prod: {}}",
            "promptship.yaml: environments.sandbox.follow_latest: ",
        ),
        ("- a list", "promptship.yaml: expected a mapping"),
        ("roles: [unclosed", "promptship.yaml: not valid YAML"),
    ],
)
def test_a_bad_policy_names_the_file_the_key_and_the_problem(yaml_text: str, message: str) -> None:
    with pytest.raises(BadInput) as refused:
        parse_policy(yaml_text, "promptship.yaml")
    assert message in str(refused.value), str(refused.value)


def test_dev_may_follow_the_newest_push() -> None:
    assert not parse_policy("").environments.dev_policy.follow_latest
    policy = parse_policy("environments: {dev: {follow_latest: true}}")
    assert policy.environments.dev_policy.follow_latest
    assert policy.environments.names == ("dev", "staging", "production")


def test_a_value_out_of_range_says_what_was_given() -> None:
    with pytest.raises(BadInput) as refused:
        parse_policy("environments: {staging: {min_pass_rate: 1.5}}", "ops/policy.yaml")
    text = str(refused.value)
    assert text.startswith("ops/policy.yaml: environments.staging.min_pass_rate: ")
    assert "less than or equal to 1" in text and "1.5" in text


def test_loading_from_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_policy(None) == Policy()  # no ./promptship.yaml: defaults
    (tmp_path / "promptship.yaml").write_text("channel: C0HERE\n")
    assert load_policy(None).channel == "C0HERE"
    with pytest.raises(BadInput, match="nowhere.yaml: policy file not found"):
        load_policy(tmp_path / "nowhere.yaml")


def test_settings_come_from_the_documented_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMPTSHIP_DATABASE_URL", "postgresql+asyncpg://db/promptship")
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-secret-token")
    monkeypatch.setenv("SLACK_API_URL", "http://127.0.0.1:9999/api/")
    settings = Settings()
    assert settings.database_url == "postgresql+asyncpg://db/promptship"
    assert settings.slack_api_url == "http://127.0.0.1:9999/api/"
    assert settings.slack_bot_token is not None
    assert "xoxb-secret-token" not in repr(settings)  # secrets stay out of logs


@given(st.integers(1, 10_000), st.sampled_from(["s", "m", "h", "d"]))
def test_durations_round_trip(amount: int, unit: str) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit] * amount
    parsed = parse_duration(f"{amount}{unit}")
    assert parsed == timedelta(seconds=seconds)
    assert parse_duration(format_duration(parsed)) == parsed


@pytest.mark.parametrize("bad", ["", "h", "-1h", "1w", "one hour", "1.5.h"])
def test_bad_durations_are_refused_with_the_right_form(bad: str) -> None:
    with pytest.raises(BadInput, match="s, m, h or d|duration"):
        parse_duration(bad)


def test_roles_take_user_ids_groups_and_email_addresses() -> None:
    policy = parse_policy("roles: {approvers: [U01, S0GROUP, Alice@Acme.COM], oncall: [W02]}")
    assert policy.roles.approvers == ["U01", "S0GROUP", "alice@acme.com"]
    for entry in ("alice", "@acme.com", "alice@", "u01", "github:alice"):
        with pytest.raises(BadInput) as err:
            parse_policy(f"roles: {{approvers: [U01, '{entry}']}}")
        assert "promptship.yaml: roles.approvers" in err.value.message
        assert "not a Slack user ID (U01ABCDEF), a user-group ID (S0GROUP) or an e-mail" in (
            err.value.message
        )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://admin:s3cret@db:port/promptship",
        "postgresql+asyncpg://admin:s3c@ret@db:54x/promptship",
    ],
)
def test_a_malformed_database_url_is_refused_without_its_password(url: str) -> None:
    with pytest.raises(BadInput) as refused:
        create_engine(url)
    assert "is not a database URL" in refused.value.message
    assert "admin:***@" in refused.value.message
    assert "s3c" not in refused.value.message and "ret" not in refused.value.message
