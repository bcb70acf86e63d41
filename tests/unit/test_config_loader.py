"""Strict configuration files: any bytes give a document or one ConfigError, nothing else."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planner.config_loader import decode, parse_json, parse_yaml, short
from planner.errors import ConfigError

pytestmark = pytest.mark.unit

YAMLISH = st.text(alphabet=st.sampled_from(list("ab:-[]{},&*!?|>'\"#%@` \n\t.0123456789~e")),
                  max_size=80)


@settings(max_examples=400)
@given(data=st.one_of(st.binary(max_size=200), YAMLISH.map(str.encode)))
def test_any_bytes_are_a_document_or_a_config_error(data: bytes) -> None:
    try:
        parse_yaml(decode(data, "f.yaml"), "f.yaml")
    except ConfigError as exc:
        assert str(exc).startswith("f.yaml") and len(str(exc)) < 400


@settings(max_examples=300)
@given(text=st.text(alphabet=st.sampled_from(list('{}[]:,"0123456789.eE-+ntrufalsNIy ')),
                    max_size=60))
def test_any_json_text_is_a_document_or_a_config_error(text: str) -> None:
    try:
        parse_json(text, "f.json")
    except ConfigError as exc:
        assert str(exc).startswith("f.json") and len(str(exc)) < 400


@pytest.mark.parametrize(("text", "expected"), [
    ("a: yes\nb: on\nc: 2013-02-08\n", {"a": "yes", "b": "on", "c": "2013-02-08"}),
    ("a: 1e9\nb: 0x1f\nc: -7\nd: .5\n", {"a": 1e9, "b": 31, "c": -7, "d": 0.5}),
    ("a: ~\nb: null\nc: true\nd: 'true'\ne: !!str 12\n",
     {"a": None, "b": None, "c": True, "d": "true", "e": "12"}),
    ("- [1, 2]\n- {x: y}\n", [[1, 2], {"x": "y"}]),
    ("", None),
])
def test_yaml_1_2_core_scalars(text: str, expected: object) -> None:
    assert parse_yaml(text, "f.yaml") == expected


def test_special_floats_are_floats_for_the_reader_to_refuse() -> None:
    doc = parse_yaml("a: .inf\nb: -.Inf\nc: .nan\n", "f.yaml")
    assert doc["a"] == math.inf and doc["b"] == -math.inf and math.isnan(doc["c"])


@pytest.mark.parametrize(("text", "expected"), [
    ("a: !!python/object:os.system x\n", "tag tag:yaml.org,2002:python/object"),
    ("? [x]\n: 1\n", "a mapping key is a list"),
    ("a: 1\n---\nb: 2\n", "a second YAML document"),
    ("a: *x\n", "alias *x is not accepted"),
])
def test_unsafe_or_ambiguous_yaml_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace("*", r"\*").replace("?", r"\?")):
        parse_yaml(text, "f.yaml")


def test_short_quotes_a_long_value() -> None:
    assert len(short("x" * 10_000)) <= 60 and short("abc") == "'abc'"
    assert len(short(list(range(10_000)))) <= 60
