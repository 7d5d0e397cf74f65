"""The ``--where`` grammar: every parse error is a usage error (FilterSyntaxError, exit 2) with the
culprit named, never another exception; a property test over arbitrary text holds that."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mmindex.pipeline.errors import ConfigError, FilterSyntaxError
from mmindex.pipeline.store.filters import MAP_FIELDS, Condition, PayloadFilter, parse_where
from mmindex.schemas.payload import PointPayload

_NAME = st.from_regex(r"[A-Za-z_][A-Za-z0-9_\-]{0,8}", fullmatch=True)
# Fields the payload has (unknown ones are refused: tests/test_cli_where_fields.py): plain, or keys of meta.
_FIELD = st.one_of(
    st.sampled_from(sorted(set(PointPayload.model_fields) - set(MAP_FIELDS))),
    st.lists(_NAME, min_size=1, max_size=2).map(lambda names: "meta." + ".".join(names)),
)
_OP = st.sampled_from(["=", "!=", ">=", "<=", ">", "<"])


@pytest.mark.parametrize(
    "expression",
    ["meta.=1", "meta..x=1", ".ext=png", "=1", "ext", "ext=", "ext=a,,b", "width>=nan", "width<inf", "bytes>1e999",
     "a b=1", "meta.x y=1"],
)
def test_malformed_expressions_are_usage_errors(expression: str) -> None:
    with pytest.raises(FilterSyntaxError) as caught:
        parse_where([expression])
    assert caught.value.exit_code == 2
    assert repr(expression) in str(caught.value)


def test_dotted_fields_and_lists_parse() -> None:
    parsed = parse_where(["meta.camera.model=x100,z9", "width>=640", "ext!=txt"])
    assert parsed == PayloadFilter((
        Condition("meta.camera.model", "any", ("x100", "z9")),
        Condition("width", "gte", 640.0),
        Condition("ext", "ne", "txt"),
    ))


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=40))
def test_any_text_parses_or_is_a_usage_error(expression: str) -> None:
    try:
        parsed = parse_where([expression])
    except FilterSyntaxError as exc:
        assert isinstance(exc, ConfigError) and "\n" not in str(exc).replace(repr(expression), "")
        return
    (condition,) = parsed.conditions
    assert condition.field and not condition.field.endswith(".") and ".." not in condition.field


@settings(max_examples=300, deadline=None)
@given(_FIELD, _OP, st.text(max_size=20))
def test_well_formed_fields_with_any_value(field: str, op: str, value: str) -> None:
    try:
        parsed = parse_where([f"{field}{op}{value}"])
    except FilterSyntaxError:
        return
    (condition,) = parsed.conditions
    assert condition.field == field
    if isinstance(condition.value, float):
        assert math.isfinite(condition.value)
