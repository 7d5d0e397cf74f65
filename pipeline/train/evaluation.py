"""Retrieval on held-out pairs: image→text and text→image recall@1/5/10 and the mean rank.

Pairs that share a caption (a product line, "a red circle") are one text: image→text ranks the
distinct captions for each image, text→image ranks every image for each distinct caption, and
a query's rank is the rank of its first correct answer (so recall@k is the share of queries with
a correct answer in the top k, and the mean rank is 1 when every first answer is right).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from mmindex.pipeline.train.pairs import PairTensors

if TYPE_CHECKING:
    import torch

RECALL_AT = (1, 5, 10)
EVAL_BATCH = 256


@dataclass(frozen=True, slots=True)
class DirectionMetrics:
    """Recall@1/5/10 (fractions) and the mean rank of one retrieval direction."""

    r1: float
    r5: float
    r10: float
    mean_rank: float
    queries: int


@dataclass(frozen=True, slots=True)
class RetrievalMetrics:
    """Both directions on one set of pairs."""

    image_to_text: DirectionMetrics
    text_to_image: DirectionMetrics
    pairs: int

    @property
    def mean_recall(self) -> float:
        """The mean of the six recalls (what ``--wise-alpha auto`` maximizes)."""
        directions = (self.image_to_text, self.text_to_image)
        return float(np.mean([value for d in directions for value in (d.r1, d.r5, d.r10)]))

    def as_json(self) -> dict[str, Any]:
        """Plain data for evaluation.json."""
        return {**asdict(self), "mean_recall": self.mean_recall}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RetrievalMetrics:
        """The inverse of ``as_json``."""
        return cls(DirectionMetrics(**data["image_to_text"]), DirectionMetrics(**data["text_to_image"]), int(data["pairs"]))


def _ranks(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """1-based rank of the best-scored correct column in each row."""
    best_correct = np.where(correct, similarity, -np.inf).max(axis=1, keepdims=True)
    return (similarity > best_correct).sum(axis=1) + 1


def _direction(ranks: np.ndarray) -> DirectionMetrics:
    recalls = [float(np.mean(ranks <= k)) for k in RECALL_AT]
    return DirectionMetrics(recalls[0], recalls[1], recalls[2], float(np.mean(ranks)), int(len(ranks)))


def retrieval_metrics(image_vectors: np.ndarray, captions: Sequence[str], caption_vectors: dict[str, np.ndarray]) -> RetrievalMetrics:
    """Metrics from normalized image vectors, their captions, and each distinct caption's vector."""
    texts = sorted(caption_vectors)
    text_matrix = np.stack([caption_vectors[text] for text in texts])
    similarity = image_vectors @ text_matrix.T  # (images, distinct captions)
    column = {text: index for index, text in enumerate(texts)}
    correct = np.zeros(similarity.shape, dtype=bool)
    correct[np.arange(len(captions)), [column[caption] for caption in captions]] = True
    return RetrievalMetrics(_direction(_ranks(similarity, correct)), _direction(_ranks(similarity.T, correct.T)), len(captions))


def encode_pairs(model: Any, data: PairTensors, to_pixels: Callable[[np.ndarray], torch.Tensor],
                 device: torch.device) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Normalized float32 image vectors of ``data`` and one vector per distinct caption."""
    import torch

    was_training = model.training
    model.eval()
    images: list[np.ndarray] = []
    texts: dict[str, np.ndarray] = {}
    distinct = sorted(set(data.captions))
    first_row = {caption: data.captions.index(caption) for caption in distinct}
    with torch.inference_mode():
        for start in range(0, len(data), EVAL_BATCH):
            pixels = to_pixels(data.pixels[start : start + EVAL_BATCH])
            images.append(torch.nn.functional.normalize(model.encode_image(pixels).float(), dim=-1).cpu().numpy())
        for start in range(0, len(distinct), EVAL_BATCH):
            chunk = distinct[start : start + EVAL_BATCH]
            tokens = torch.from_numpy(data.tokens[[first_row[c] for c in chunk]]).to(device)
            vectors = torch.nn.functional.normalize(model.encode_text(tokens).float(), dim=-1).cpu().numpy()
            texts.update(zip(chunk, vectors, strict=True))
    model.train(was_training)
    return np.concatenate(images), texts


def evaluate(model: Any, data: PairTensors, to_pixels: Callable[[np.ndarray], torch.Tensor], device: torch.device) -> RetrievalMetrics:
    """Retrieval metrics of ``model`` on the pairs of ``data``."""
    image_vectors, caption_vectors = encode_pairs(model, data, to_pixels, device)
    return retrieval_metrics(image_vectors, data.captions, caption_vectors)


METRIC_COLUMNS = ("pairs", "i→t R@1", "R@5", "R@10", "mean rank", "t→i R@1", "R@5", "R@10", "mean rank")


def metric_cells(metrics: RetrievalMetrics) -> list[str]:
    """One table row's cells, in the order of ``METRIC_COLUMNS``."""
    cells = [str(metrics.pairs)]
    for direction in (metrics.image_to_text, metrics.text_to_image):
        cells += [f"{direction.r1:.3f}", f"{direction.r5:.3f}", f"{direction.r10:.3f}", f"{direction.mean_rank:.1f}"]
    return cells


def metrics_markdown(rows: Sequence[tuple[str, RetrievalMetrics]]) -> str:
    """The before/after table as Markdown (the flow's artifact; the CLI prints the same rows)."""
    lines = ["| model | " + " | ".join(METRIC_COLUMNS) + " |", "|---" * (len(METRIC_COLUMNS) + 1) + "|"]
    lines += ["| " + " | ".join([name, *metric_cells(metrics)]) + " |" for name, metrics in rows]
    return "\n".join(lines)
