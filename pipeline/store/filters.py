"""Backend-neutral payload filters, and the parser of ``--where`` expressions.

Grammar (several expressions are ANDed): ``field=value``, ``field!=value``, ``field=a,b`` (any
of), ``field!=a,b`` (none of), ``field>=x``, ``field<=x``, ``field>x``, ``field<x``. Values of
integer and float fields (see ``schemas.payload.INDEXED_FIELDS``) are parsed as numbers; a field
that is not indexed (``meta.*`` sidecar fields) is matched as a number when the value is one and
as a string otherwise.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from mmindex.pipeline.errors import FilterSyntaxError
from mmindex.schemas.payload import INDEXED_FIELDS, FieldType

Operator = Literal["eq", "ne", "any", "none", "gte", "lte", "gt", "lt"]
Scalar = str | int | float

# A field is dot-separated names (``kind``, ``meta.camera.model``): no empty part, no trailing dot.
_FIELD = r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*"
_EXPRESSION = re.compile(rf"\s*(?P<field>{_FIELD})\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*", re.DOTALL)
_RANGE_OPS: dict[str, Operator] = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}


@dataclass(frozen=True, slots=True)
class Condition:
    """One condition on one payload field.

    ``eq``/``ne`` hold one value, ``any``/``none`` a tuple of values, ranges a number.
    """

    field: str
    op: Operator
    value: Scalar | tuple[Scalar, ...]


@dataclass(frozen=True, slots=True)
class PayloadFilter:
    """All conditions must hold."""

    conditions: tuple[Condition, ...] = field(default_factory=tuple)

    def __bool__(self) -> bool:
        return bool(self.conditions)


def _parse_number(text: str, as_type: FieldType | None, expression: str) -> int | float:
    try:
        if as_type is FieldType.INTEGER:
            return int(text)
        number = float(text)
    except ValueError:
        raise FilterSyntaxError(f"--where {expression!r}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise FilterSyntaxError(f"--where {expression!r}: {text!r} is not a finite number")
    return int(number) if as_type is None and number.is_integer() and re.fullmatch(r"[-+]?\d+", text) else number


def _parse_value(text: str, as_type: FieldType | None, expression: str) -> Scalar:
    if as_type is FieldType.KEYWORD:
        return text
    if as_type in (FieldType.INTEGER, FieldType.FLOAT):
        return _parse_number(text, as_type, expression)
    if re.fullmatch(r"[-+]?\d+", text):
        return int(text)
    return text


def parse_where(expressions: Iterable[str], field_types: Mapping[str, FieldType] = INDEXED_FIELDS) -> PayloadFilter:
    """Parse ``--where`` expressions into one filter; raises FilterSyntaxError with the culprit."""
    conditions: list[Condition] = []
    for expression in expressions:
        match = _EXPRESSION.fullmatch(expression)
        if match is None:
            raise FilterSyntaxError(
                f"--where {expression!r}: expected FIELD=VALUE, FIELD!=VALUE, FIELD=A,B or FIELD>=|<=|>|<NUMBER "
                "(FIELD is names joined by dots, such as kind or meta.camera)"
            )
        name, op, raw = match["field"], match["op"], match["value"]
        if raw == "":
            raise FilterSyntaxError(f"--where {expression!r}: missing value after {op!r}")
        as_type = field_types.get(name)
        if op in _RANGE_OPS:
            if as_type is FieldType.KEYWORD:
                raise FilterSyntaxError(f"--where {expression!r}: {name!r} is a text field; ranges need a numeric field")
            conditions.append(Condition(name, _RANGE_OPS[op], float(_parse_number(raw, as_type, expression))))
            continue
        parts = [part.strip() for part in raw.split(",")]
        if any(part == "" for part in parts):
            raise FilterSyntaxError(f"--where {expression!r}: empty value in list")
        values = tuple(_parse_value(part, as_type, expression) for part in parts)
        if len(values) == 1:
            conditions.append(Condition(name, "eq" if op == "=" else "ne", values[0]))
        else:
            conditions.append(Condition(name, "any" if op == "=" else "none", values))
    return PayloadFilter(tuple(conditions))
