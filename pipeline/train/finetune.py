"""``mmindex finetune``: pairs → base evaluation → training → WiSE-FT → local-dir folder (→ migrate).

The CLI, the Prefect flow and the benchmark call ``finetune_collection`` and, with ``--migrate``,
``migrate_to_finetuned`` (the existing zero-downtime migration: queries keep answering from the
current version until the new one is complete).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX
from mmindex.pipeline.embed.model import Embedder, ModelSpec, load_embedder
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ingest.run import IndexReport, ProgressReporter
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import is_remote
from mmindex.pipeline.train.evaluation import RetrievalMetrics, evaluate, metrics_markdown
from mmindex.pipeline.train.export import (
    EVALUATION_NAME,
    WORK_DIR,
    base_model_config,
    read_provenance,
    write_local_dir,
)
from mmindex.pipeline.train.loop import Lock, TrainConfig, TrainPrecision, TrainProgress, TrainResult, train
from mmindex.pipeline.train.pairs import PairSplits, captioned_images, decode_pairs, split_pairs
from mmindex.pipeline.train.wise import SweepPoint, interpolate, sweep_alpha
from mmindex.schemas.config import Settings
from mmindex.schemas.state import CollectionState

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

WiseAlpha = float | Literal["auto"]


@dataclass(frozen=True, slots=True)
class FinetuneRequest:
    """One fine-tuning job of a collection's own model."""

    collection: str
    config: TrainConfig = field(default_factory=TrainConfig)
    holdout: float = 0.2
    wise_alpha: WiseAlpha = 1.0
    output: Path | None = None
    device: str = "auto"


@dataclass(frozen=True, slots=True)
class FinetuneReport:
    """What a job measured and wrote (``train`` is None when a finished output was reused)."""

    output: Path
    splits: dict[str, int]
    base: RetrievalMetrics
    tuned: RetrievalMetrics
    saved: RetrievalMetrics
    alpha: float
    sweep: list[SweepPoint]
    train: TrainResult | None
    skipped: int

    @property
    def model(self) -> str:
        """The output as a model spec for ``mmindex index --model``."""
        return f"{LOCAL_DIR_PREFIX}{self.output}"

    def rows(self) -> list[tuple[str, RetrievalMetrics]]:
        """The table's rows: base, fine-tuned, and the saved weights when WiSE-FT mixed them."""
        rows = [("base", self.base), ("fine-tuned", self.tuned)]
        if self.alpha != 1.0:
            rows.append((f"saved (WiSE-FT α={self.alpha:g})", self.saved))
        return rows

    def markdown(self) -> str:
        """The evaluation as Markdown (the flow's artifact)."""
        lines = [f"**{self.model}**: test {self.splits['test']} pairs, trained on {self.splits['train']}", "",
                 metrics_markdown(self.rows())]
        if self.sweep:
            lines += ["", "WiSE-FT sweep (validation mean recall): "
                      + ", ".join(f"α={p.alpha:g}: {p.validation.mean_recall:.3f}" for p in self.sweep)]
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        """evaluation.json."""
        return {
            "splits": self.splits, "skipped_pairs": self.skipped, "test": {
                "base": self.base.as_json(), "fine_tuned": self.tuned.as_json(), "saved": self.saved.as_json()},
            "wise_alpha": self.alpha,
            "wise_sweep": [{"alpha": p.alpha, "validation": p.validation.as_json()} for p in self.sweep],
        }


def finetune_request(
    collection: str, *, epochs: int = 5, batch_size: int = 64, lr: float = 1e-5, warmup: int | None = None,
    lock_image: bool = False, lock_text: bool = False, unlock_last: int | None = None, wise_alpha: str = "1",
    holdout: float = 0.2, output: Path | None = None, device: str = "auto", precision: str = "auto", seed: int = 0,
) -> FinetuneRequest:
    """A request from the flags of ``mmindex finetune`` (the flow takes the same ones).

    Raises:
        ConfigError: conflicting locks, an unknown precision, an α that is not a number or ``auto``.
    """
    if sum((lock_image, lock_text, unlock_last is not None)) > 1:
        raise ConfigError("give at most one of --lock-image, --lock-text, --unlock-last")
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise ConfigError(f"--precision must be auto, fp32, bf16 or fp16, not {precision!r}")
    try:
        alpha: WiseAlpha = "auto" if wise_alpha == "auto" else float(wise_alpha)
    except ValueError:
        raise ConfigError(f"--wise-alpha must be a number in [0, 1] or auto, not {wise_alpha!r}") from None
    lock: Lock = "image" if lock_image else "text" if lock_text else "last" if unlock_last is not None else "none"
    config = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, lock=lock, unlock_last=unlock_last or 0,
                         precision=cast("TrainPrecision", precision), seed=seed)
    return FinetuneRequest(collection, config, holdout, _resolve_alpha(alpha), output, device)


def _fingerprint(collection: CollectionState, request: FinetuneRequest, splits: PairSplits) -> str:
    data = {
        "base": collection.current.embedder_id, "config": request.config.as_json(), "holdout": request.holdout,
        "wise_alpha": request.wise_alpha, "train": [[p.ref.key, p.ref.size, p.ref.mtime_ns, p.caption] for p in splits.train],
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def default_output(settings: Settings, collection: CollectionState, fingerprint: str) -> Path:
    """``<root>/models/<collection>/<version>-ft-<job>``: where every worker of the collection reads.

    Raises:
        ConfigError: the root is on object storage (open_clip loads local folders only).
    """
    root = settings.root
    if is_remote(root) or not isinstance(root, Path):
        raise ConfigError(f"the index root {root} is not a local folder: give --output a folder every worker reads")
    return IndexPaths(root).models_dir(collection.name) / f"{collection.current.physical_name}-ft-{fingerprint[:10]}"


def _resolve_alpha(alpha: WiseAlpha) -> WiseAlpha:
    if alpha != "auto" and not 0.0 <= float(alpha) <= 1.0:
        raise ConfigError(f"--wise-alpha must be in [0, 1] or auto, not {alpha}")
    return alpha


def pixel_converter(embedder: Embedder) -> Any:
    """What turns decoded pairs' pixels into the model's input batch (normalized as indexing does)."""
    import torch

    plan, device = embedder.pixel_plan, embedder.device

    def to_pixels(array: np.ndarray) -> torch.Tensor:
        batch = torch.from_numpy(np.require(array, requirements=["C", "W"])).to(device)  # a memmap slice is read-only
        return plan.normalize(batch) if plan is not None else batch

    return to_pixels


def _reused(output: Path, fingerprint: str) -> FinetuneReport | None:
    provenance = read_provenance(output)
    if provenance is None or provenance.get("fingerprint") != fingerprint:
        return None
    data = json.loads((output / EVALUATION_NAME).read_text(encoding="utf-8"))
    test = data["test"]
    return FinetuneReport(
        output, data["splits"], RetrievalMetrics.from_json(test["base"]), RetrievalMetrics.from_json(test["fine_tuned"]),
        RetrievalMetrics.from_json(test["saved"]), float(data["wise_alpha"]),
        [SweepPoint(p["alpha"], RetrievalMetrics.from_json(p["validation"])) for p in data["wise_sweep"]], None,
        int(data["skipped_pairs"]),
    )


def _clone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def finetune_collection(settings: Settings, request: FinetuneRequest, progress: TrainProgress | None = None) -> FinetuneReport:
    """Fine-tune the collection's current model on its captioned images; write the output folder.

    A folder already holding this very job (same base, data and hyper-parameters) is reused; an
    interrupted one resumes from its last epoch checkpoint.
    """
    alpha = _resolve_alpha(request.wise_alpha)
    collection = collection_state(settings, request.collection)
    splits = split_pairs(captioned_images(settings.root, collection), request.holdout, need_validation=alpha == "auto")
    fingerprint = _fingerprint(collection, request, splits)
    output = (request.output or default_output(settings, collection, fingerprint)).expanduser().resolve()
    reused = _reused(output, fingerprint)
    if reused is not None:
        log.info("reusing the finished fine-tuning in %s", output)
        return reused
    spec = ModelSpec(collection.current.model, collection.current.pretrained)
    embedder = load_embedder(spec, request.device, "fp32")  # master weights stay fp32; autocast does the rest
    work = output / WORK_DIR
    train_data = decode_pairs(splits.train, embedder, settings.image_limits, collection.sources, work)
    test_data = decode_pairs(splits.test, embedder, settings.image_limits, collection.sources, work)
    val_data = decode_pairs(splits.validation, embedder, settings.image_limits, collection.sources, work) if alpha == "auto" else None
    to_pixels = pixel_converter(embedder)
    model, device = embedder.model, embedder.device
    base_state = _clone(model.state_dict())
    base = evaluate(model, test_data, to_pixels, device)
    result = train(model, train_data, to_pixels, device, request.config, checkpoint=work / "checkpoint.pt",
                   fingerprint=fingerprint, progress=progress)
    tuned_state = _clone(model.state_dict())
    tuned = evaluate(model, test_data, to_pixels, device)
    sweep: list[SweepPoint] = []
    if alpha == "auto" and val_data is not None:
        alpha, sweep = sweep_alpha(model, base_state, tuned_state, lambda m: evaluate(m, val_data, to_pixels, device))
    chosen = float(alpha)
    saved = tuned
    if chosen != 1.0:
        model.load_state_dict(interpolate(base_state, tuned_state, chosen))
        saved = evaluate(model, test_data, to_pixels, device)
    skipped = len(splits.train) + len(splits.test) - len(train_data) - len(test_data)
    report = FinetuneReport(output, splits.sizes(), base, tuned, saved, chosen, sweep, result, skipped)
    provenance = {
        "fingerprint": fingerprint, "collection": collection.name, "base_model": spec.describe(),
        "base_embedder_id": collection.current.embedder_id, "pairs": splits.sizes(), "skipped_pairs": skipped,
        "hyper_parameters": request.config.as_json(), "holdout": request.holdout, "wise_alpha": chosen,
        "training": {"steps": result.steps, "precision": result.precision, "pairs_per_second": result.pairs_per_second},
        "created_at": datetime.now(UTC).isoformat(),
    }
    write_local_dir(output, model, base_model_config(spec.name, embedder.weights), report.as_json(), provenance)
    shutil.rmtree(work, ignore_errors=True)
    return report


def migrate_to_finetuned(settings: Settings, collection: str, report: FinetuneReport,
                         progress: ProgressReporter | None = None) -> IndexReport:
    """Migrate the collection to the fine-tuned model with the existing migration."""
    from mmindex.pipeline.manage.maintenance import migrate_collection

    return migrate_collection(settings, collection, ModelSpec(report.model), progress)
