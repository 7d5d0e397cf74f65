"""Zero-shot labels: score every image of a collection against label texts, store the winners.

Each label becomes one text vector: every prompt template (``"a photo of a {}."``) is filled
with the label, embedded with the collection's model, normalized, averaged and normalized again
(CLIP's prompt ensembling). An image's score for a label is then either

* ``softmax`` (default): ``softmax_over_labels(logit_scale · cos(image, label))`` — CLIP's
  zero-shot probability among the given labels (they sum to 1 per image); or
* ``cosine``: the raw cosine similarity (absolute, but its scale depends on the model).

Labels whose score reaches the threshold are written to the image's payload, best first:
``labels: [..]`` (a keyword index, so ``--where labels=cat`` filters) and
``label_scores: {label: score}``. A run replaces the labels of every image it scores (an image
that passes no label gets ``[]``). Image vectors are read back from the store, not re-embedded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mmindex.pipeline.collection import Collection
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.errors import ConfigError, SourceError
from mmindex.pipeline.store.filters import Condition, PayloadFilter
from mmindex.pipeline.store.store import PayloadUpdate, StoredPoint, VectorStore
from mmindex.schemas.config import Settings
from mmindex.schemas.payload import INDEXED_FIELDS, LABEL_SCORES_FIELD, LABELS_FIELD
from mmindex.schemas.state import LabelConfig, LabelScoring

log = logging.getLogger(__name__)

DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.",)
DEFAULT_THRESHOLDS: dict[LabelScoring, float] = {"softmax": 0.5, "cosine": 0.25}
_KEYS_PER_FILTER = 512
_PAGE = 256
# CLIP's initial temperature (1/0.07) when a model has no learned logit scale.
_FALLBACK_LOGIT_SCALE = 1 / 0.07


class LabelProgress(Protocol):
    """Receives progress of a labeling run (the CLI draws it with Rich)."""

    def start(self, total_items: int) -> None: ...

    def advance(self, items: int) -> None: ...


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """The labels, prompt templates, scoring and threshold of a labeling run."""

    labels: tuple[str, ...]
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    threshold: float | None = None
    scoring: LabelScoring = "softmax"

    def __post_init__(self) -> None:
        if not self.labels:
            raise ConfigError("give at least one label (--labels a,b or --labels-file FILE)")
        if len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels must be distinct")
        if not self.templates:
            raise ConfigError("give at least one prompt template")
        for template in self.templates:
            if "{}" not in template:
                raise ConfigError(f"prompt template {template!r} has no '{{}}' for the label")
        if self.scoring not in DEFAULT_THRESHOLDS:
            raise ConfigError(f"label scoring must be softmax or cosine, not {self.scoring!r}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ConfigError(f"label threshold must be between -1 and 1, got {self.threshold}")

    @property
    def effective_threshold(self) -> float:
        """The threshold given, else 0.5 (softmax) or 0.25 (cosine)."""
        return DEFAULT_THRESHOLDS[self.scoring] if self.threshold is None else self.threshold

    def prompts(self, label: str) -> list[str]:
        """The label in every template."""
        return [template.replace("{}", label) for template in self.templates]


@dataclass(slots=True)
class LabelReport:
    """What a labeling run did: images scored, images given at least one label, count per label."""

    collection: str
    images: int = 0
    labeled: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    threshold: float = 0.0
    scoring: LabelScoring = "softmax"
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection, "images": self.images, "labeled": self.labeled, "counts": self.counts,
            "threshold": self.threshold, "scoring": self.scoring, "seconds": round(self.seconds, 3),
        }


def split_labels(text: str) -> tuple[str, ...]:
    """``"cat, dog,car"`` -> ``("cat", "dog", "car")`` (order kept, blanks and repeats dropped)."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def read_labels_file(path: Path) -> tuple[str, ...]:
    """One label per line (UTF-8); blank lines and lines starting with ``#`` are skipped."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"cannot read labels file {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    lines = (line.strip() for line in text.splitlines())
    return tuple(dict.fromkeys(line for line in lines if line and not line.startswith("#")))


def label_vectors(embedder: Embedder, spec: LabelSpec) -> np.ndarray:
    """(labels, dim) unit vectors: per label, the normalized mean of its normalized prompt embeddings."""
    prompts = [prompt for label in spec.labels for prompt in spec.prompts(label)]
    embedded = embedder.encode_texts(prompts).astype(np.float64)
    embedded /= np.linalg.norm(embedded, axis=1, keepdims=True)
    means = embedded.reshape(len(spec.labels), len(spec.templates), -1).mean(axis=1)
    return (means / np.linalg.norm(means, axis=1, keepdims=True)).astype(np.float32)


def logit_scale(embedder: Embedder) -> float:
    """The model's learned temperature ``exp(logit_scale)`` as its own forward computes it (CLIP ≈ 100)."""
    parameter = getattr(embedder.model, "logit_scale", None)
    if parameter is None:
        return _FALLBACK_LOGIT_SCALE
    return float(parameter.detach().exp().float().cpu().reshape(-1)[0])


def score_images(image_vectors: np.ndarray, labels: np.ndarray, scoring: LabelScoring, scale: float) -> np.ndarray:
    """(images, labels) scores: cosine similarities, or their softmax over labels at ``scale``."""
    images = np.asarray(image_vectors, dtype=np.float64)
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    cosine = images @ np.asarray(labels, dtype=np.float64).T
    if scoring == "cosine":
        return cosine
    logits = scale * cosine
    logits -= logits.max(axis=1, keepdims=True)
    exps = np.exp(logits)
    return exps / exps.sum(axis=1, keepdims=True)


def passing_labels(scores: np.ndarray, labels: Sequence[str], threshold: float) -> dict[str, float]:
    """Labels scoring at least ``threshold``, best first, with their scores."""
    order = np.argsort(-scores, kind="stable")
    return {labels[i]: round(float(scores[i]), 6) for i in order if scores[i] >= threshold}


def _image_filters(only_keys: Iterable[str] | None) -> Iterator[PayloadFilter]:
    images = Condition("modality", "eq", "image")
    if only_keys is None:
        yield PayloadFilter((images,))
        return
    keys = list(dict.fromkeys(only_keys))
    for start in range(0, len(keys), _KEYS_PER_FILTER):
        yield PayloadFilter((images, Condition("key", "any", tuple(keys[start : start + _KEYS_PER_FILTER]))))


def _pages(store: VectorStore, name: str, payload_filter: PayloadFilter) -> Iterator[list[StoredPoint]]:
    offset: str | None = None
    while True:
        page = store.scroll(name, payload_filter, limit=_PAGE, offset=offset, with_vectors=True)
        if page.points:
            yield page.points
        if page.next_offset is None:
            return
        offset = page.next_offset


def _label_updates(points: list[StoredPoint], vectors: np.ndarray, spec: LabelSpec, scale: float) -> list[PayloadUpdate]:
    """The labels payload of each point (points without a vector are left out by the caller)."""
    if not points:
        return []
    scores = score_images(np.stack([point.vector for point in points]), vectors, spec.scoring, scale)  # type: ignore[misc]
    updates = []
    for point, row in zip(points, scores, strict=True):
        passed = passing_labels(row, spec.labels, spec.effective_threshold)
        updates.append(PayloadUpdate(point.id, {LABELS_FIELD: list(passed), LABEL_SCORES_FIELD: passed}))
    return updates


def label_collection(
    collection: Collection,
    spec: LabelSpec,
    only_keys: Iterable[str] | None = None,
    progress: LabelProgress | None = None,
) -> LabelReport:
    """Label the collection's images (or those of ``only_keys``) with its own model."""
    started = time.perf_counter()
    embedder = collection.embedder()
    store = collection.store()
    name = collection.physical_name
    store.create_field_index(name, LABELS_FIELD, INDEXED_FIELDS[LABELS_FIELD])  # collections made before labels
    vectors = label_vectors(embedder, spec)
    scale = logit_scale(embedder)
    report = LabelReport(collection.name, counts=dict.fromkeys(spec.labels, 0), threshold=spec.effective_threshold,
                         scoring=spec.scoring)
    filters = list(_image_filters(only_keys))
    if progress is not None:
        progress.start(sum(store.count(name, payload_filter) for payload_filter in filters))
    for payload_filter in filters:
        for points in _pages(store, name, payload_filter):
            updates = _label_updates([p for p in points if p.vector is not None], vectors, spec, scale)
            store.set_payload(name, updates)
            report.images += len(updates)
            for update in updates:
                passed: dict[str, float] = update.payload[LABEL_SCORES_FIELD]
                report.labeled += bool(passed)
                for label in passed:
                    report.counts[label] += 1
            if progress is not None:
                progress.advance(len(points))
    report.seconds = time.perf_counter() - started
    log.info("labeled %d images of %r (%d with a label) in %.1fs", report.images, collection.name,
             report.labeled, report.seconds)
    return report


def apply_labels(
    settings: Settings,
    collection: str,
    labels: Sequence[str],
    templates: Sequence[str] = DEFAULT_TEMPLATES,
    threshold: float | None = None,
    only_keys: Iterable[str] | None = None,
    *,
    scoring: LabelScoring = "softmax",
    embedder: Embedder | None = None,
    progress: LabelProgress | None = None,
) -> LabelReport:
    """Label a collection's images (all, or those of ``only_keys``) and store the labels in Qdrant.

    ``threshold=None`` takes the scoring's default (softmax 0.5, cosine 0.25). Loads the
    collection's own model unless ``embedder`` is given (it must be the collection's).
    """
    spec = LabelSpec(tuple(labels), tuple(templates), threshold, scoring)
    with Collection.open(settings, collection, embedder=embedder) as opened:
        report = label_collection(opened, spec, only_keys, progress)
    remember_labels(settings, collection, spec)
    return report


def remember_labels(settings: Settings, collection: str, spec: LabelSpec) -> None:
    """Save the label settings so later ingests label the points they rewrite the same way."""
    from mmindex.pipeline.io.state_file import edit_state

    config = LabelConfig(labels=list(spec.labels), templates=list(spec.templates), threshold=spec.threshold, scoring=spec.scoring)
    with edit_state(settings.root) as state:
        if collection in state.collections:
            state.collections[collection].labels = config
