"""Translate a backend-neutral ``PayloadFilter`` into a Qdrant filter, once for every backend.

qdrant-edge and qdrant-client spell the same filter model with different classes
(``qdrant_edge.FieldCondition`` vs ``qdrant_client.models.FieldCondition``), so the semantics
live here and each backend supplies a ``FilterBuilders`` that makes its own objects.

Semantics (every condition must hold):

* ``eq`` / ``any``: the field equals one of the values (``must``);
* ``ne`` / ``none``: the field equals none of them (``must_not``; a point without the field
  passes, as in Qdrant);
* ``gte`` / ``lte`` / ``gt`` / ``lt``: a numeric range.

Qdrant matches only strings and integers exactly, so a float value becomes the range
``[v, v]``. An integer value on a field that is not indexed (``meta.*`` sidecar fields, whose
type is unknown) also matches its string form, so ``meta.year=2020`` finds ``2020`` and
``"2020"``.

``exclude_ids`` adds "the point id is none of these" (``must_not`` + ``has_id``): how a
more-like-this query leaves out its own examples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from mmindex.pipeline.store.filters import Condition, PayloadFilter, Scalar
from mmindex.schemas.payload import INDEXED_FIELDS, FieldType

_MATCH_OPS = frozenset({"eq", "ne", "any", "none"})
_NEGATED_OPS = frozenset({"ne", "none"})


class FilterBuilders(Protocol):
    """Constructors of one backend's filter objects."""

    def filter(self, must: list[Any] | None, should: list[Any] | None, must_not: list[Any] | None) -> Any:
        """A boolean filter; ``None`` clauses are left out."""

    def match_value(self, key: str, value: str | int) -> Any:
        """``key`` equals ``value``."""

    def match_any(self, key: str, values: list[str] | list[int]) -> Any:
        """``key`` equals one of ``values`` (all of one type)."""

    def range(self, key: str, gte: float | None, gt: float | None, lte: float | None, lt: float | None) -> Any:
        """``key`` is a number within the bounds."""

    def has_id(self, ids: list[str]) -> Any:
        """The point id is one of ``ids``."""


def _values(condition: Condition) -> tuple[Scalar, ...]:
    value = condition.value
    return value if isinstance(value, tuple) else (value,)


def _widen(field: str, values: tuple[Scalar, ...], field_types: Mapping[str, FieldType]) -> list[Scalar]:
    """Add the string form of integers on fields of unknown type (deduplicated, order kept)."""
    widened: list[Scalar] = []
    for value in values:
        widened.append(value)
        if field not in field_types and isinstance(value, int) and not isinstance(value, bool):
            widened.append(str(value))
    return list(dict.fromkeys(widened))


def _exact(builders: FilterBuilders, key: str, values: list[str] | list[int]) -> Any:
    return builders.match_value(key, values[0]) if len(values) == 1 else builders.match_any(key, values)


def _alternatives(builders: FilterBuilders, key: str, values: list[Scalar]) -> list[Any]:
    """Conditions of which any one holds exactly when ``key`` equals one of ``values``."""
    strings = [v for v in values if isinstance(v, str)]
    integers = [v for v in values if isinstance(v, int)]
    floats = [float(v) for v in values if isinstance(v, float)]
    alternatives: list[Any] = []
    if strings:
        alternatives.append(_exact(builders, key, strings))
    if integers:
        alternatives.append(_exact(builders, key, integers))
    alternatives.extend(builders.range(key, gte=v, gt=None, lte=v, lt=None) for v in floats)
    return alternatives


def _range(builders: FilterBuilders, condition: Condition) -> Any:
    bound = condition.value
    if isinstance(bound, tuple) or isinstance(bound, str):
        raise ValueError(f"range condition on {condition.field!r} needs one number, got {bound!r}")
    bounds: dict[str, float | None] = {"gte": None, "gt": None, "lte": None, "lt": None}
    bounds[condition.op] = float(bound)
    return builders.range(condition.field, **bounds)


def translate_filter(
    payload_filter: PayloadFilter | None,
    builders: FilterBuilders,
    field_types: Mapping[str, FieldType] = INDEXED_FIELDS,
    exclude_ids: Sequence[str] = (),
) -> Any | None:
    """The backend filter for ``payload_filter`` without ``exclude_ids``; ``None``: nothing to filter."""
    if not payload_filter and not exclude_ids:
        return None
    must: list[Any] = []
    must_not: list[Any] = [builders.has_id(list(dict.fromkeys(exclude_ids)))] if exclude_ids else []
    conditions = payload_filter.conditions if payload_filter else ()
    for condition in conditions:
        if condition.op not in _MATCH_OPS:
            must.append(_range(builders, condition))
            continue
        options = _alternatives(builders, condition.field, _widen(condition.field, _values(condition), field_types))
        if condition.op in _NEGATED_OPS:
            must_not.extend(options)
        elif len(options) == 1:
            must.append(options[0])
        else:
            must.append(builders.filter(must=None, should=options, must_not=None))
    return builders.filter(must=must or None, should=None, must_not=must_not or None)
