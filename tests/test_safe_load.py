"""The bounded YAML loader refuses a key written twice in one mapping: YAML would keep the
last one silently, so ``prompt_version`` written twice would deploy the second."""

from __future__ import annotations

import pytest

from promptship.domain.safe_load import load_yaml, load_yaml_located
from promptship.errors import BadInput

TWICE = """\
customer-support:
  production:
    prompt_version: "1.0.0"
    prompt_version: "2.0.0"
"""


def test_a_duplicate_key_is_refused_naming_its_path_and_both_lines() -> None:
    for load in (load_yaml, load_yaml_located):
        with pytest.raises(BadInput) as refused:
            load(TWICE, "deployment.yaml")
        assert str(refused.value) == (
            "deployment.yaml: line 4: customer-support.production.prompt_version: "
            "duplicate key (first at line 3)"
        )


def test_duplicates_are_found_in_lists_and_at_the_top_and_quoting_does_not_hide_them() -> None:
    with pytest.raises(
        BadInput, match=r"line 4: tests\[1\]\.name: duplicate key \(first at line 3\)"
    ):
        load_yaml("tests:\n  - name: a\n  - {name: b,\n     name: c}\n", "prompt.yaml")
    with pytest.raises(BadInput, match="line 2: version: duplicate key .first at line 1"):
        load_yaml('version: "1.0.0"\n"version": "2.0.0"\n', "request body")


def test_equal_looking_keys_of_different_types_and_repeats_in_sibling_mappings_load() -> None:
    assert load_yaml('1: a\n"1": b\n', "x") == {1: "a", "1": "b"}
    assert load_yaml("a: {k: 1}\nb: {k: 2}\n", "x") == {"a": {"k": 1}, "b": {"k": 2}}
