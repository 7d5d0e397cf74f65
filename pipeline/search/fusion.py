"""Fused queries: several weighted query parts combined into one vector in embedding space.

A query is a list of parts (texts, images, stored items, raw vectors), each positive or
negative with a weight ``w > 0``. Every part is embedded and L2-normalized to ``e_i``;
``s_i`` is +1 for a positive part and −1 for a negative one. The query vector is the
normalized weighted sum::

    q = Σ_i s_i · w_i · e_i          q̂ = q / ‖q‖

Qdrant ranks by cosine similarity, and stored vectors ``x`` are unit length, so the score of
an item is ``cos(q̂, x) = Σ_i s_i · w_i · (e_i · x) / ‖q‖``: a sum with one term per part.
That term is the part's *contribution*; the contributions of a hit add up to its score, which
is what ``--json`` shows to explain a result.

Default weights: 1 for positive parts, 0.5 for negative ones — for one positive and one
negative example that is the ratio of Qdrant's ``average_vector`` recommend strategy
(``2·mean(pos) − mean(neg)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mmindex.pipeline.errors import ConfigError

PartKind = Literal["text", "image", "like", "vector"]
POSITIVE_WEIGHT = 1.0
NEGATIVE_WEIGHT = 0.5
# Below this the parts cancel out and the query has no direction.
_MIN_NORM = 1e-6


@dataclass(frozen=True, slots=True, eq=False)
class QueryPart:
    """One term of a query: what to embed (or look up), its weight, and whether it pushes away.

    ``value`` is the text (``text``), the image file (``image``), an item key, point id or
    indexed file path (``like``), or a vector (``vector``). ``weight=None`` takes the default
    of the part's sign.
    """

    kind: PartKind
    value: str | Path | np.ndarray
    weight: float | None = None
    negative: bool = False

    def __post_init__(self) -> None:
        if self.weight is not None and not (np.isfinite(self.weight) and self.weight > 0):
            raise ConfigError(f"weight of {self.describe()} must be a positive number, got {self.weight}")
        if self.kind in ("text", "like") and not str(self.value).strip():
            raise ConfigError(f"empty {self.kind} in a query")

    def _identity(self) -> tuple[Any, ...]:
        value = np.asarray(self.value).tobytes() if self.kind == "vector" else str(self.value)
        return (self.kind, value, self.effective_weight, self.negative)

    def __eq__(self, other: object) -> bool:
        """Same kind, value (vectors element by element), weight and sign."""
        if not isinstance(other, QueryPart):
            return NotImplemented
        return self._identity() == other._identity()

    def __hash__(self) -> int:
        return hash(self._identity())

    @classmethod
    def text(cls, text: str, weight: float | None = None, negative: bool = False) -> QueryPart:
        """A text to embed with the collection's model."""
        return cls("text", text, weight, negative)

    @classmethod
    def image(cls, path: str | Path, weight: float | None = None, negative: bool = False) -> QueryPart:
        """An image file to embed (decoded and preprocessed exactly as at ingest)."""
        return cls("image", Path(path), weight, negative)

    @classmethod
    def like(cls, ref: str, weight: float | None = None, negative: bool = False) -> QueryPart:
        """A stored item (key, point id or indexed file path): its stored vector, not re-embedded."""
        return cls("like", ref, weight, negative)

    @classmethod
    def vector(cls, vector: np.ndarray | Sequence[float], weight: float | None = None, negative: bool = False) -> QueryPart:
        """A vector of the collection's space (normalized before use)."""
        return cls("vector", np.asarray(vector, dtype=np.float32), weight, negative)

    @property
    def effective_weight(self) -> float:
        """The weight given, else 1 (positive) or 0.5 (negative)."""
        if self.weight is not None:
            return float(self.weight)
        return NEGATIVE_WEIGHT if self.negative else POSITIVE_WEIGHT

    @property
    def sign(self) -> int:
        """+1 for a positive part, −1 for a negative one."""
        return -1 if self.negative else 1

    def describe(self) -> str:
        """Short human form: ``not text 'blurry'``, ``image cat.jpg``, ``like KEY``, ``vector[512]``."""
        if self.kind == "vector":
            label = f"vector[{np.asarray(self.value).size}]"
        elif self.kind == "image":
            label = f"image {self.value}"
        else:
            label = f"{self.kind} {str(self.value)!r}"
        return f"not {label}" if self.negative else label

    def as_json(self) -> dict[str, Any]:
        """The part as JSON (vectors by their length only)."""
        value: Any = f"<{np.asarray(self.value).size} floats>" if self.kind == "vector" else str(self.value)
        return {"kind": self.kind, "value": value, "weight": self.effective_weight, "sign": self.sign}


@dataclass(frozen=True, slots=True)
class EmbeddedPart:
    """A part with its unit vector; ``point_ids`` are set for ``like`` parts (the stored item, or
    every chunk of a stored document)."""

    part: QueryPart
    vector: np.ndarray
    point_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Contribution:
    """How much one part added to a hit's score: ``sign · weight · similarity / ‖q‖``."""

    part: QueryPart
    similarity: float
    contribution: float

    def as_json(self) -> dict[str, Any]:
        return {
            **self.part.as_json(),
            "part": self.part.describe(),
            "similarity": self.similarity,
            "contribution": self.contribution,
        }


@dataclass(frozen=True, slots=True)
class FusedQuery:
    """The normalized query vector, the norm it had before normalizing, and its parts."""

    vector: np.ndarray
    norm: float
    parts: tuple[EmbeddedPart, ...]

    def contributions(self, item_vector: np.ndarray) -> tuple[Contribution, ...]:
        """Each part's term of the item's score (they sum to ``cos(q̂, item)``)."""
        item = np.asarray(item_vector, dtype=np.float64)
        item = item / max(float(np.linalg.norm(item)), _MIN_NORM)
        terms = []
        for embedded in self.parts:
            similarity = float(np.dot(embedded.vector.astype(np.float64), item))
            part = embedded.part
            terms.append(Contribution(part, similarity, part.sign * part.effective_weight * similarity / self.norm))
        return tuple(terms)

    @property
    def example_ids(self) -> tuple[str, ...]:
        """Point ids of the stored items the query names (never returned as hits)."""
        return tuple(dict.fromkeys(point_id for p in self.parts for point_id in p.point_ids))


def unit(vector: np.ndarray, what: str) -> np.ndarray:
    """``vector`` scaled to length 1 (float32); ``ConfigError`` for a zero or non-finite vector."""
    array = np.asarray(vector, dtype=np.float64).reshape(-1)
    norm = float(np.linalg.norm(array))
    if not np.isfinite(norm) or norm < _MIN_NORM:
        raise ConfigError(f"{what} has no direction (zero or non-finite vector)")
    return (array / norm).astype(np.float32)


def fuse(parts: Sequence[EmbeddedPart]) -> FusedQuery:
    """``q̂ = Σ s_i w_i e_i / ‖Σ s_i w_i e_i‖``; at least one part must be positive."""
    if not parts:
        raise ConfigError("give a query text, --image PATH or --like KEY")
    if all(embedded.part.negative for embedded in parts):
        raise ConfigError("a query needs at least one positive part, not only negative ones")
    total = np.zeros(parts[0].vector.shape, dtype=np.float64)
    for embedded in parts:
        total += embedded.part.sign * embedded.part.effective_weight * embedded.vector.astype(np.float64)
    norm = float(np.linalg.norm(total))
    if norm < _MIN_NORM:
        raise ConfigError("the query parts cancel each other out; change the weights")
    return FusedQuery((total / norm).astype(np.float32), norm, tuple(parts))


def parse_weights(text: str) -> tuple[float, ...]:
    """``"0.7,0.3"`` -> ``(0.7, 0.3)``; every weight must be a positive number."""
    weights: list[float] = []
    for item in text.split(","):
        try:
            weight = float(item.strip())
        except ValueError:
            raise ConfigError(f"--weights {text!r}: {item.strip()!r} is not a number") from None
        if not (np.isfinite(weight) and weight > 0):
            raise ConfigError(f"--weights {text!r}: weights must be positive (negative parts use --not)")
        weights.append(weight)
    return tuple(weights)


def with_weights(parts: Sequence[QueryPart], weights: Sequence[float] | None) -> tuple[QueryPart, ...]:
    """The parts with ``weights`` applied in order (one weight per part), or unchanged."""
    if weights is None:
        return tuple(parts)
    if len(weights) != len(parts):
        listed = ", ".join(part.describe() for part in parts) or "none"
        raise ConfigError(f"--weights has {len(weights)} values for {len(parts)} query parts ({listed})")
    return tuple(QueryPart(p.kind, p.value, float(w), p.negative) for p, w in zip(parts, weights, strict=True))
