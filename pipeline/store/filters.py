"""Backend-neutral payload filters, and the parser of ``--where`` expressions.

Grammar (several expressions are ANDed): ``field=value``, ``field!=value``, ``field=a,b`` (any
of), ``field!=a,b`` (none of), ``field>=x``, ``field<=x``, ``field>x``, ``field<x``. Values of
integer and float fields (see ``schemas.payload.INDEXED_FIELDS``) are parsed as numbers; a field
that is not indexed (``meta.*`` sidecar fields) is matched as a number when the value is one and
as a string otherwise.

A field must be one of the payload's (``schemas.payload.PointPayload``), or a key inside one of
its two maps (``meta.KEY``, ``label_scores.LABEL``): any other name is refused with the list of
known fields, and so is a value outside a field's fixed set (``modality`` is ``image`` or
``text``). A known field and value that match nothing is an empty result, not an error.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from mmindex.pipeline.errors import FilterSyntaxError
from mmindex.schemas.items import Modality
from mmindex.schemas.payload import INDEXED_FIELDS, FieldType, PointPayload

Operator = Literal["eq", "ne", "any", "none", "gte", "lte", "gt", "lt"]
Scalar = str | int | float

# A field is dot-separated names (``kind``, ``meta.camera.model``): no empty part, no trailing dot.
_FIELD = r"[A-Za-z_][A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_][A-Za-z0-9_\-]*)*"
_EXPRESSION = re.compile(rf"\s*(?P<field>{_FIELD})\s*(?P<op>!=|>=|<=|=|>|<)\s*(?P<value>.*?)\s*", re.DOTALL)
_RANGE_OPS: dict[str, Operator] = {">=": "gte", "<=": "lte", ">": "gt", "<": "lt"}
# Payload maps whose keys are fields too (``meta.camera``, ``label_scores.cat``).
MAP_FIELDS = ("meta", "label_scores")
# Fields whose values form a fixed set.
FIELD_VALUES: dict[str, tuple[str, ...]] = {"modality": get_args(Modality)}


def known_fields() -> list[str]:
    """The field names ``--where`` accepts, as an error message lists them."""
    return [f"{name}.KEY" if name in MAP_FIELDS else name for name in PointPayload.model_fields]


def _check_field(name: str, expression: str) -> None:
    top, dot, _ = name.partition(".")
    if top in PointPayload.model_fields and bool(dot) == (top in MAP_FIELDS):
        return
    raise FilterSyntaxError(
        f"--where {expression!r}: no field {name!r} in the collection's payload (fields: {', '.join(known_fields())})"
    )


def _check_values(name: str, values: tuple[Scalar, ...], expression: str) -> None:
    allowed = FIELD_VALUES.get(name)
    if allowed is None:
        return
    unknown = [value for value in values if value not in allowed]
    if unknown:
        raise FilterSyntaxError(f"--where {expression!r}: {name} is one of {', '.join(allowed)}, not {unknown[0]!r}")


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
        _check_field(name, expression)
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
        _check_values(name, values, expression)
        if len(values) == 1:
            conditions.append(Condition(name, "eq" if op == "=" else "ne", values[0]))
        else:
            conditions.append(Condition(name, "any" if op == "=" else "none", values))
    return PayloadFilter(tuple(conditions))
