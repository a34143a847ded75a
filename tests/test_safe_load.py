"""The bounded YAML loader refuses a key written twice in one mapping: YAML would keep the
last one silently, so ``prompt_version`` written twice would deploy the second."""

from __future__ import annotations

import pytest

from promptship.domain.safe_load import load_yaml, load_yaml12, load_yaml_located
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


def test_yaml_1_2_reads_scalars_as_promptfoo_does() -> None:
    doc = "[Yes, no, on, off, y, true, False, ~, 010, 0o10, 0x1F, 1_000, 1e3, .5, 2024-01-01]"
    assert load_yaml12(doc, "x") == [
        "Yes",
        "no",
        "on",
        "off",
        "y",
        True,
        False,
        None,
        10,
        8,
        31,
        "1_000",
        1000.0,
        0.5,
        "2024-01-01",
    ]
    assert load_yaml("[Yes, 010]", "x") == [True, 8]  # prompt files stay YAML 1.1


def test_yaml_1_2_takes_anchors_aliases_and_merge_keys_and_bounds_them() -> None:
    doc = "base: &b {x: 1, y: 2}\nm:\n  <<: *b\n  y: 3\nl: [*b, *b]\n"
    assert load_yaml12(doc, "x") == {
        "base": {"x": 1, "y": 2},
        "m": {"x": 1, "y": 3},
        "l": [{"x": 1, "y": 2}, {"x": 1, "y": 2}],
    }
    laughs = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
        f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    with pytest.raises(BadInput, match="aliases expand this document beyond 4,194,304"):
        load_yaml12(laughs, "config.yaml")
    with pytest.raises(BadInput, match="recursive"):
        load_yaml12("a: &a [1, *a]", "config.yaml")
    with pytest.raises(BadInput, match="nested deeper than 64 levels once aliases are expanded"):
        load_yaml12(
            "a: &a0 [0]\n" + "".join(f"a{n}: &a{n} [*a{n - 1}]\n" for n in range(1, 70)), "c"
        )
    with pytest.raises(BadInput, match=r"line 2: a\.k: duplicate key"):
        load_yaml12("a: {k: 1,\n  k: 2}", "config.yaml")
    with pytest.raises(BadInput, match="aliases are not allowed"):
        load_yaml(doc, "prompt.yaml")
