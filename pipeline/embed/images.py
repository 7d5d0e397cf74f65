"""Decode, preprocess and embed images in batches; decoding runs in DataLoader workers.

A file that cannot be read or decoded becomes a failed record with its reason; it never stops
the run. Records keep the order of the input references.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ...schemas.items import STATUS_FAILED, ItemRecord
from ..errors import DecodeError
from ..sources.base import ItemRef
from .decode import decode_image, read_caption, read_item_bytes, read_metadata, sha256_hex
from .model import Embedder

if TYPE_CHECKING:
    import torch
    from PIL import Image

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024


def base_record(ref: ItemRef, embedder_id: str) -> ItemRecord:
    """A record with the fields every item of ``ref`` shares (identity, location, stat)."""
    from ..ids import point_id  # noqa: PLC0415

    return ItemRecord(
        key=ref.key,
        point_id=point_id(ref.key),
        source_id=ref.source_id,
        modality=ref.modality,
        uri=ref.uri,
        path=ref.path,
        ext=ref.ext,
        embedder_id=embedder_id,
        bytes=ref.size,
        mtime_ns=ref.mtime_ns,
    )


def fail(record: ItemRecord, reason: str) -> ItemRecord:
    """Mark a record failed with a one-line reason."""
    record.status = STATUS_FAILED
    record.error = reason.strip().splitlines()[0][:500] if reason.strip() else "unknown error"
    return record


@dataclass(slots=True)
class ImageSample:
    """What a worker returns for one image: its record and, if it decoded, its pixels."""

    record: ItemRecord
    pixels: torch.Tensor | None


@dataclass(slots=True)
class ImageBatch:
    """Samples in input order and the stacked pixels of those that decoded."""

    samples: list[ImageSample]
    pixels: torch.Tensor


class ImageDecodeDataset:
    """Map-style dataset: index -> decoded, preprocessed image (or a failed record)."""

    def __init__(
        self,
        refs: Sequence[ItemRef],
        preprocess: Callable[[Image.Image], torch.Tensor],
        embedder_id: str,
        max_pixels: int,
    ) -> None:
        self.refs = list(refs)
        self.preprocess = preprocess
        self.embedder_id = embedder_id
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, index: int) -> ImageSample:
        ref = self.refs[index]
        record = base_record(ref, self.embedder_id)
        try:
            data = read_item_bytes(ref, MAX_FILE_BYTES)
            record.bytes = len(data)
            record.sha256 = sha256_hex(data)
            decoded = decode_image(data, self.max_pixels)
            pixels = self.preprocess(decoded.image)
        except DecodeError as exc:
            return ImageSample(fail(record, str(exc)), None)
        except (OSError, ValueError, RuntimeError) as exc:  # preprocessing of odd images
            return ImageSample(fail(record, f"cannot preprocess image: {exc}"), None)
        record.width, record.height, record.mime = decoded.width, decoded.height, decoded.mime
        if ref.caption_path:
            record.caption = read_caption(ref.caption_path)
        if ref.metadata_path:
            metadata = read_metadata(ref.metadata_path)
            record.metadata_json = None if metadata is None else json.dumps(metadata, sort_keys=True)
        return ImageSample(record, pixels)


def collate_images(samples: list[ImageSample]) -> ImageBatch:
    """Stack the pixels of decoded samples; failed samples ride along without pixels."""
    import torch  # noqa: PLC0415

    decoded = [sample.pixels for sample in samples if sample.pixels is not None]
    pixels = torch.stack(decoded) if decoded else torch.zeros((0, 3, 1, 1))
    return ImageBatch(samples, pixels)


def available_cores() -> int:
    """CPU cores this process may run on."""
    import os  # noqa: PLC0415

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Decode worker processes beside a GPU: one per spare core, at most 8."""
    return max(1, min(8, available_cores() - 1))


def _burst_batches(dataset: ImageDecodeDataset, batch_size: int, threads: int) -> Iterator[ImageBatch]:
    """Decode each batch with a thread pool, between forward passes (Pillow releases the GIL).

    On a CPU-only host this beats worker processes: decoding never competes with the encoder's
    threads for cores, it just runs on all of them in the short gaps between forward passes.
    """
    from concurrent.futures import ThreadPoolExecutor  # noqa: PLC0415

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmindex-decode") as pool:
        for start in range(0, len(dataset), batch_size):
            stop = min(start + batch_size, len(dataset))
            yield collate_images(list(pool.map(dataset.__getitem__, range(start, stop))))


def _loader_batches(dataset: ImageDecodeDataset, batch_size: int, workers: int, pin_memory: bool) -> Iterator[ImageBatch]:
    """Decode in DataLoader worker processes, overlapped with the forward pass (GPU hosts)."""
    from torch.utils.data import DataLoader  # noqa: PLC0415

    yield from DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
    )


def embed_images(
    refs: Sequence[ItemRef],
    embedder: Embedder,
    *,
    batch_size: int,
    workers: int | None,
    max_pixels: int,
) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """Yield (records, embeddings) per batch, in input order; failed rows have zero vectors.

    ``workers=None`` picks the decoding strategy for the device: worker processes that overlap
    with a GPU, or bursts of decode threads between forward passes on a CPU. An explicit number
    asks for that many worker processes (0: decode in the calling thread).
    """
    if not refs:
        return
    dataset = ImageDecodeDataset(refs, embedder.preprocess, embedder.embedder_id, max_pixels)
    on_cpu = embedder.device.type == "cpu"
    if workers is None and on_cpu:
        batches = _burst_batches(dataset, batch_size, available_cores())
    else:
        count = default_workers() if workers is None else workers
        batches = _loader_batches(dataset, batch_size, count, pin_memory=not on_cpu)
    for batch in batches:
        vectors = embedder.encode_images(batch.pixels)
        embeddings = np.zeros((len(batch.samples), embedder.dim), dtype=np.float32)
        decoded_rows = [row for row, sample in enumerate(batch.samples) if sample.pixels is not None]
        embeddings[decoded_rows] = vectors
        yield [sample.record for sample in batch.samples], embeddings
