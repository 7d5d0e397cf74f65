"""Training pairs: every image item of a collection that has a caption, split by item key.

The pairs come from the collection's current version (the catalog's current rows: ``status``
ok, ``modality`` image, a non-empty ``caption``); their bytes are read back through their own
source's reader, as indexing reads them (``UnitReader``: a folder's files, a manifest's URLs
over the guarded HTTP fetcher, a prefix's objects, a WebDataset tar's members), in bounded
batches, and decoded and preprocessed exactly as indexing does (``PixelPlan``).
The split is a pure function of each item key (sha256 of the key as a number in [0, 1)), so it
never changes between runs, machines or collection edits: an item stays in the split it was in.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.compute as pc

from mmindex.pipeline.embed.images import MAX_FILE_BYTES, available_cores, base_record, decoded_pixels
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.errors import ConfigError, DecodeError
from mmindex.pipeline.io.catalog import latest_rows
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.root import StoragePath
from mmindex.pipeline.sources.base import ItemRef
from mmindex.pipeline.sources.readers import UnitReader
from mmindex.schemas.config import ImageLimits
from mmindex.schemas.items import STATUS_OK
from mmindex.schemas.state import CollectionState, SourceSpec

log = logging.getLogger(__name__)

VALIDATION_FRACTION = 0.1  # a separate split, after the held-out one, for choosing the WiSE-FT alpha
MIN_EVAL_PAIRS = 10  # fewer held-out pairs than this measure nothing
READ_BATCH = 256  # pairs read (one source reader, fetching ahead) and decoded at a time
_PAIR_COLUMNS = ["key", "doc_key", "source_id", "modality", "uri", "path", "ext", "status", "caption", "bytes", "mtime_ns"]


@dataclass(frozen=True, slots=True)
class CaptionedImage:
    """One training pair: an indexed image item and its caption."""

    ref: ItemRef
    caption: str


@dataclass(frozen=True, slots=True)
class PairSplits:
    """The pairs of a collection split by item key: train, validation and held-out test."""

    train: list[CaptionedImage]
    validation: list[CaptionedImage]
    test: list[CaptionedImage]

    def sizes(self) -> dict[str, int]:
        """Pairs per split."""
        return {"train": len(self.train), "validation": len(self.validation), "test": len(self.test)}


def key_fraction(key: str) -> float:
    """A fixed number in [0, 1) for an item key (its split position)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def captioned_images(root: StoragePath, collection: CollectionState) -> list[CaptionedImage]:
    """Every image item of the collection's current version with a caption, sorted by key.

    Raises:
        ConfigError: the collection has no images, or none of them has a caption.
    """
    rows = latest_rows(IndexPaths(root).shard_log(collection.name, collection.current.physical_name), _PAIR_COLUMNS)
    rows = rows.filter(pc.and_(pc.equal(rows.column("status"), STATUS_OK), pc.equal(rows.column("modality"), "image")))
    if rows.num_rows == 0:
        raise ConfigError(f"collection {collection.name!r} has no indexed images to fine-tune on (only texts, or nothing yet)")
    pairs = [
        CaptionedImage(
            ItemRef(key=row["key"], source_id=row["source_id"], uri=row["uri"], path=row["path"], ext=row["ext"],
                    modality="image", size=row["bytes"] or 0, mtime_ns=row["mtime_ns"] or 0),
            " ".join(row["caption"].split()),
        )
        for row in rows.to_pylist()
        if row["caption"] and row["caption"].strip()
    ]
    if not pairs:
        raise ConfigError(
            f"none of the {rows.num_rows} images of collection {collection.name!r} has a caption "
            "(a sidecar photo.txt beside photo.jpg, then `mmindex index` again)"
        )
    return sorted(pairs, key=lambda pair: pair.ref.key)


def split_pairs(pairs: Sequence[CaptionedImage], holdout: float, validation: float = VALIDATION_FRACTION,
                need_validation: bool = False) -> PairSplits:
    """Split by item key: ``[0, holdout)`` test, then ``validation`` more for validation, the rest train.

    Raises:
        ConfigError: a fraction out of range, or a split too small to train or to measure.
    """
    if not 0 < holdout < 1 or not 0 <= validation < 1 or holdout + validation >= 1:
        raise ConfigError(f"--holdout must be in (0, {1 - validation:g}), not {holdout:g}")
    test: list[CaptionedImage] = []
    val: list[CaptionedImage] = []
    train: list[CaptionedImage] = []
    for pair in pairs:
        position = key_fraction(pair.ref.key)
        (test if position < holdout else val if position < holdout + validation else train).append(pair)
    if len(test) < MIN_EVAL_PAIRS:
        raise ConfigError(
            f"the held-out split has {len(test)} of {len(pairs)} captioned images (needs at least {MIN_EVAL_PAIRS}): "
            "caption more images or raise --holdout"
        )
    if need_validation and len(val) < MIN_EVAL_PAIRS:
        raise ConfigError(
            f"the validation split has {len(val)} captioned images (needs at least {MIN_EVAL_PAIRS} for --wise-alpha auto): "
            "caption more images or give --wise-alpha a number"
        )
    if len(train) < 2:
        raise ConfigError(f"only {len(train)} captioned images are left to train on: caption more images or lower --holdout")
    return PairSplits(train, val, test)


@dataclass(frozen=True, slots=True)
class PairTensors:
    """Decoded pairs ready for the model: pixels as the indexing path makes them, and tokens.

    ``pixels`` is uint8 (N, H, W, 3) when the model's transform has a ``PixelPlan`` (normalized
    per batch, as indexing does), else the transform's own float (N, 3, H, W); ``keys`` and
    ``captions`` are those of the pairs that decoded.
    """

    keys: list[str]
    captions: list[str]
    pixels: np.ndarray
    tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def _decode(pair: CaptionedImage, reader: UnitReader, embedder: Embedder, limits: ImageLimits) -> np.ndarray | None:
    record = base_record(pair.ref, embedder.embedder_id)
    try:
        data = reader.read(pair.ref, MAX_FILE_BYTES)
    except DecodeError as exc:
        log.warning("skipping %s: %s", pair.ref.path, exc)
        return None
    pixels = decoded_pixels(record, data, limits, embedder.pixel_plan, embedder.preprocess)
    if pixels is None:
        log.warning("skipping %s: %s", pair.ref.path, record.error)
        return None
    return pixels if isinstance(pixels, np.ndarray) else pixels.numpy()


def _read_decoded(pairs: Sequence[CaptionedImage], sources: Mapping[str, SourceSpec], embedder: Embedder,
                  limits: ImageLimits) -> list[tuple[CaptionedImage, np.ndarray]]:
    """The pairs that read and decode, ``READ_BATCH`` at a time, each batch through one
    ``UnitReader`` (a remote source's fetches run ahead of the decoding threads)."""
    kept: list[tuple[CaptionedImage, np.ndarray]] = []
    with ThreadPoolExecutor(max_workers=available_cores(), thread_name_prefix="mmindex-train-decode") as pool:
        for start in range(0, len(pairs), READ_BATCH):
            batch = pairs[start : start + READ_BATCH]
            with UnitReader(sources, [pair.ref for pair in batch]) as reader:
                decoded = list(pool.map(lambda pair: _decode(pair, reader, embedder, limits), batch))
            kept += [(pair, pixels) for pair, pixels in zip(batch, decoded, strict=True) if pixels is not None]
    return kept


def decode_pairs(pairs: Sequence[CaptionedImage], embedder: Embedder, limits: ImageLimits, sources: Mapping[str, SourceSpec],
                 cache: Path | None = None) -> PairTensors:
    """Read (through each pair's source), decode and preprocess every pair once, tokenizing the captions.

    ``sources`` are the collection's (``CollectionState.sources``). An image that cannot be read
    or decoded any more is skipped with a warning. With ``cache`` (a folder), the decoded pixels
    are kept there as ``.npy`` files named by the pairs they hold, so a resumed run does not
    read or decode again.
    """
    fingerprint = hashlib.sha256(json.dumps([[p.ref.key, p.ref.size, p.ref.mtime_ns] for p in pairs]).encode()).hexdigest()[:16]
    if cache is not None and (cache / f"pairs-{fingerprint}.json").is_file():
        meta = json.loads((cache / f"pairs-{fingerprint}.json").read_text(encoding="utf-8"))
        pixels = np.load(cache / f"pixels-{fingerprint}.npy", mmap_mode="r")
        return PairTensors(meta["keys"], meta["captions"], pixels, _tokens(embedder, meta["captions"]))
    kept = _read_decoded(pairs, sources, embedder, limits)
    if not kept:
        raise ConfigError("none of the captioned images could be read back from its source")
    keys = [pair.ref.key for pair, _ in kept]
    captions = [pair.caption for pair, _ in kept]
    stacked = np.stack([pixels for _, pixels in kept])
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / f"pixels-{fingerprint}.npy", stacked)
        (cache / f"pairs-{fingerprint}.json").write_text(json.dumps({"keys": keys, "captions": captions}), encoding="utf-8")
    return PairTensors(keys, captions, stacked, _tokens(embedder, captions))


def _tokens(embedder: Embedder, captions: Sequence[str]) -> np.ndarray:
    return embedder.tokenizer(list(captions)).numpy()
