"""Decode, preprocess and embed images in batches.

A file that cannot be read or decoded becomes a failed record with its reason; it never stops
the run. Records keep the order of the input references.

Per item, only what must be per item runs (read, hash, decode, resize/crop to uint8); converting
to float and normalizing run once per batch, on the device that encodes it (``preprocess.py``).
How decoding is scheduled depends on the device (``embed_images``'s ``workers`` and ``strategy``):

* CPU (default): bursts of decode threads between forward passes. Decoding and encoding both
  need every core of a small CPU; taking turns keeps each at full speed, where decoding beside
  the encoder (threads or processes) makes both fight for the same cores (``benchmarks/ingest.py
  --strategies`` measures the alternatives).
* CUDA (default): decode worker processes overlapped with the GPU; JPEGs are decoded, resized
  and normalized on the GPU (``gpu_decode.py``), other formats on the CPU; pinned memory and
  non-blocking copies.
* ``workers=N``: N decode worker processes (0: decode in the calling thread), on any device.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np

from mmindex.pipeline import timing
from mmindex.pipeline.embed.decode import decode_image, read_caption, read_item_bytes, read_metadata, sha256_hex
from mmindex.pipeline.embed.model import Embedder
from mmindex.pipeline.embed.preprocess import PixelPlan
from mmindex.pipeline.errors import DecodeError
from mmindex.pipeline.redact import redact_secrets
from mmindex.pipeline.sources.base import ItemReader, ItemRef
from mmindex.schemas.config import ImageLimits
from mmindex.schemas.items import STATUS_FAILED, ItemRecord

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from mmindex.pipeline.timing import StageTimes

log = logging.getLogger(__name__)

MAX_FILE_BYTES = 512 * 1024 * 1024

Strategy = Literal["auto", "burst", "overlap", "processes", "device-jpeg"]
STRATEGIES: tuple[str, ...] = ("auto", "burst", "overlap", "processes", "device-jpeg")


def base_record(ref: ItemRef, embedder_id: str) -> ItemRecord:
    """A record with the fields every item of ``ref`` shares (identity, location, stat)."""
    from mmindex.pipeline.ids import point_id

    return ItemRecord(
        key=ref.key,
        point_id=point_id(ref.key),
        source_id=ref.source_id,
        modality=ref.modality,
        uri=ref.uri,
        path=ref.path,
        ext=ref.ext,
        embedder_id=embedder_id,
        bytes=ref.known_size,
        mtime_ns=ref.mtime_ns,
    )


def fail(record: ItemRecord, reason: str) -> ItemRecord:
    """Mark a record failed with a one-line reason."""
    record.status = STATUS_FAILED
    reason = redact_secrets(reason)  # a fetch error names its URL: never with a signature or a password
    record.error = reason.strip().splitlines()[0][:500] if reason.strip() else "unknown error"
    return record


@dataclass(slots=True)
class ImageSample:
    """What decoding one image gives: its record and, unless it failed, its pixels.

    ``pixels`` is uint8 (H, W, 3) when the model's transform has a ``PixelPlan``, else the
    transform's own float (3, H, W) tensor; ``jpeg`` holds the bytes of a JPEG left for the
    device decoder (then ``pixels`` is None and the record is not failed).
    """

    record: ItemRecord
    pixels: np.ndarray | torch.Tensor | None
    jpeg: bytes | None = None


@dataclass(slots=True)
class ImageBatch:
    """One batch: every record in input order, and pixels for the rows that decoded.

    ``pixels`` holds the rows ``pixel_rows`` as uint8 (N, H, W, 3) (``layout="uint8"``) or
    float (N, 3, H, W) (``layout="float"``). The files of rows ``jpeg_rows``, still to decode on
    the device, are packed into one uint8 tensor ``jpeg_data`` cut at ``jpeg_offsets`` (one
    shared-memory block per batch between worker processes, not one per file).
    """

    records: list[ItemRecord]
    pixel_rows: np.ndarray
    pixels: torch.Tensor
    layout: Literal["uint8", "float"]
    jpeg_rows: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    jpeg_data: torch.Tensor | None = None
    jpeg_offsets: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.int64))

    def jpegs(self) -> list[torch.Tensor]:
        """The JPEG files of ``jpeg_rows``, as 1-D uint8 views of ``jpeg_data``."""
        if self.jpeg_data is None:
            return []
        bounds = self.jpeg_offsets.tolist()
        return [self.jpeg_data[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True)]

    def pin_memory(self) -> ImageBatch:
        """Page-lock the pixels (DataLoader's ``pin_memory=True`` calls this)."""
        if self.pixels.numel():
            self.pixels = self.pixels.pin_memory()
        return self


def decoded_pixels(
    record: ItemRecord,
    data: bytes,
    limits: ImageLimits,
    plan: PixelPlan | None,
    preprocess: Callable[[Image.Image], torch.Tensor],
    times: StageTimes | None = None,
) -> np.ndarray | torch.Tensor | None:
    """Decode ``data`` and apply the model's geometry; on failure mark ``record`` and give None.

    Sets the record's width, height and mime.
    """
    started = time.perf_counter()
    try:
        decoded = decode_image(data, limits, plan.decode_min_side if plan is not None else None)
        mid = time.perf_counter()
        pixels = plan.to_array(decoded.image) if plan is not None else preprocess(decoded.image)
    except DecodeError as exc:
        fail(record, str(exc))
        return None
    except (OSError, ValueError, RuntimeError) as exc:  # preprocessing of odd images
        fail(record, f"cannot preprocess image: {exc}")
        return None
    if times is not None:
        times.add("decode", mid - started, 1)
        times.add("preprocess", time.perf_counter() - mid, 1)
    record.width, record.height, record.mime = decoded.width, decoded.height, decoded.mime
    return pixels


class ImageDecodeDataset:
    """Map-style dataset: index -> decoded, preprocessed image (or a failed record).

    With ``device_jpeg``, JPEGs the device decoder can take (``gpu_decode.device_jpeg_header``)
    are only read and hashed here; their bytes ride along to be decoded on the device.
    ``times`` (threads only, never sent to worker processes) records per-item stage seconds.
    ``reader`` reads a remote source's items (threads only: it holds a fetch pool); None: local files.
    """

    def __init__(
        self,
        refs: Sequence[ItemRef],
        preprocess: Callable[[Image.Image], torch.Tensor],
        embedder_id: str,
        limits: ImageLimits,
        plan: PixelPlan | None = None,
        device_jpeg: bool = False,
        times: StageTimes | None = None,
        reader: ItemReader | None = None,
    ) -> None:
        self.refs = list(refs)
        self.reader = reader
        self.preprocess = preprocess
        self.embedder_id = embedder_id
        self.limits = limits
        self.plan = plan
        self.device_jpeg = device_jpeg
        self.times = times

    def __len__(self) -> int:
        return len(self.refs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["times"] = None  # a lock: stays in this process
        return state

    def __getitem__(self, index: int) -> ImageSample:
        ref = self.refs[index]
        record = base_record(ref, self.embedder_id)
        times = self.times
        started = time.perf_counter()
        try:
            data = read_item_bytes(ref, MAX_FILE_BYTES) if self.reader is None else self.reader.read(ref, MAX_FILE_BYTES)
        except DecodeError as exc:
            return ImageSample(fail(record, str(exc)), None)
        if self.reader is not None and (validators := self.reader.validators(ref)) is not None:
            record.etag, record.last_modified = validators.etag, validators.last_modified
        record.bytes = len(data)
        record.sha256 = sha256_hex(data)
        self._sidecars(ref, record)
        if times is not None:
            times.add("read", time.perf_counter() - started, 1)
        if self.device_jpeg:
            jpeg = self._device_jpeg(record, data)
            if jpeg is not None:
                return ImageSample(record, None, jpeg)
        pixels = decoded_pixels(record, data, self.limits, self.plan, self.preprocess, times)
        return ImageSample(record, pixels)

    def _device_jpeg(self, record: ItemRecord, data: bytes) -> bytes | None:
        from mmindex.pipeline.embed.gpu_decode import device_jpeg_header

        header = device_jpeg_header(data, self.limits.max_pixels)
        if header is None:
            return None
        record.width, record.height, record.mime = header.width, header.height, "image/jpeg"
        return data

    @staticmethod
    def _sidecars(ref: ItemRef, record: ItemRecord) -> None:
        record.caption, record.metadata_json = sidecars(ref)


def sidecars(ref: ItemRef) -> tuple[str | None, str | None]:
    """An image's caption and metadata (JSON): its sidecar files, or what its source carried inline."""
    caption = read_caption(ref.caption_path) if ref.caption_path else ref.caption
    if not ref.metadata_path:
        return caption, ref.metadata_json
    metadata = read_metadata(ref.metadata_path)
    return caption, None if metadata is None else json.dumps(metadata, sort_keys=True)


def collate_images(samples: list[ImageSample], pin: bool = False) -> ImageBatch:
    """Stack the pixels of decoded samples into one tensor (page-locked with ``pin``)."""
    import torch

    records = [sample.record for sample in samples]
    pixel_rows = [row for row, sample in enumerate(samples) if sample.pixels is not None]
    jpeg_rows = [row for row, sample in enumerate(samples) if sample.jpeg is not None]
    jpeg_data, jpeg_offsets = None, np.zeros(1, dtype=np.int64)
    if jpeg_rows:
        files = [samples[row].jpeg or b"" for row in jpeg_rows]
        jpeg_offsets = np.cumsum([0, *(len(data) for data in files)], dtype=np.int64)
        jpeg_data = torch.frombuffer(bytearray(b"".join(files)), dtype=torch.uint8)
    arrays = [samples[row].pixels for row in pixel_rows]
    layout: Literal["uint8", "float"] = "float"
    if not arrays:
        pixels = torch.zeros((0, 3, 1, 1))
    elif isinstance(arrays[0], np.ndarray):
        layout = "uint8"
        pixels = torch.empty((len(arrays), *arrays[0].shape), dtype=torch.uint8, pin_memory=pin)
        np.stack(arrays, out=pixels.numpy())  # type: ignore[arg-type]
    else:
        pixels = torch.stack(cast("list[torch.Tensor]", arrays))
        pixels = pixels.pin_memory() if pin else pixels
    return ImageBatch(records, np.asarray(pixel_rows, dtype=np.int64), pixels, layout,
                      np.asarray(jpeg_rows, dtype=np.int64), jpeg_data, jpeg_offsets)


def available_cores() -> int:
    """CPU cores this process may run on."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_workers() -> int:
    """Decode worker processes beside a GPU: one per spare core, at most 8."""
    return max(1, min(8, available_cores() - 1))


def _spans(total: int, batch_size: int) -> Iterator[range]:
    for start in range(0, total, batch_size):
        yield range(start, min(start + batch_size, total))


def _burst_batches(dataset: ImageDecodeDataset, batch_size: int, threads: int) -> Iterator[ImageBatch]:
    """Decode each batch with a thread pool, between forward passes (Pillow releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmindex-decode") as pool:
        for span in _spans(len(dataset), batch_size):
            yield collate_images(list(pool.map(dataset.__getitem__, span)))


def _overlap_batches(dataset: ImageDecodeDataset, batch_size: int, threads: int) -> Iterator[ImageBatch]:
    """Decode the next batch in threads while the current one is encoded (measured: slower on
    a 2-core CPU than bursts, since both halves want every core; kept for the benchmark)."""
    from collections import deque
    from concurrent.futures import Future, ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="mmindex-decode") as pool:
        spans = _spans(len(dataset), batch_size)
        pending: deque[list[Future[ImageSample]]] = deque()
        for span in spans:
            pending.append([pool.submit(dataset.__getitem__, index) for index in span])
            if len(pending) < 2:
                continue
            yield collate_images([future.result() for future in pending.popleft()])
        while pending:
            yield collate_images([future.result() for future in pending.popleft()])


def _loader_batches(dataset: ImageDecodeDataset, batch_size: int, workers: int, pin_memory: bool) -> Iterator[ImageBatch]:
    """Decode in DataLoader worker processes, overlapped with the forward pass."""
    from torch.utils.data import DataLoader

    yield from DataLoader(
        dataset,  # type: ignore[arg-type]
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=collate_images,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
    )


def _choose(
    strategy: Strategy, workers: int | None, device_type: str, plan: PixelPlan | None, threads_only: bool = False
) -> Strategy:
    """The strategy ``auto`` stands for on this device (a thread strategy when ``threads_only``)."""
    if threads_only:
        return strategy if strategy in ("burst", "overlap") else ("burst" if device_type == "cpu" else "overlap")
    if strategy != "auto":
        return strategy
    if workers is not None:
        return "processes"
    if device_type == "cpu":
        return "burst"
    if device_type == "cuda" and plan is not None and plan.tensor_steps is not None:
        return "device-jpeg"
    return "processes"


def _batches(
    dataset: ImageDecodeDataset, strategy: Strategy, batch_size: int, workers: int | None, device_type: str
) -> Iterator[ImageBatch]:
    on_gpu = device_type == "cuda"
    if strategy == "burst":
        return _burst_batches(dataset, batch_size, workers or available_cores())
    if strategy == "overlap":
        return _overlap_batches(dataset, batch_size, workers or available_cores())
    count = default_workers() if workers is None else workers
    return _loader_batches(dataset, batch_size, count, pin_memory=on_gpu)


def _device_pixels(batch: ImageBatch, embedder: Embedder, plan: PixelPlan | None,
                   dataset: ImageDecodeDataset) -> tuple[np.ndarray, torch.Tensor]:
    """The batch's rows with pixels and their normalized float pixels on the embedder's device."""
    if len(batch.jpeg_rows):
        from mmindex.pipeline.embed.gpu_decode import assemble_on_device

        if plan is None:
            raise ValueError("device JPEG decoding needs a PixelPlan")

        def cpu_fallback(row: int, data: bytes) -> np.ndarray | None:
            pixels = decoded_pixels(batch.records[row], data, dataset.limits, plan, dataset.preprocess)
            return pixels if isinstance(pixels, np.ndarray) else None

        with timing.stage("device_decode"):
            return assemble_on_device(batch.jpeg_rows, batch.jpegs(), batch.pixel_rows, batch.pixels, plan,
                                      embedder.device, cpu_fallback)
    pixels = batch.pixels
    if pixels.device != embedder.device:
        with timing.stage("h2d"):
            pixels = pixels.to(embedder.device, non_blocking=True)
    if batch.layout == "uint8" and plan is not None:
        with timing.stage("normalize"):
            pixels = plan.normalize(pixels)
    return batch.pixel_rows, pixels


def embed_images(
    refs: Sequence[ItemRef],
    embedder: Embedder,
    *,
    batch_size: int,
    workers: int | None,
    limits: ImageLimits,
    strategy: Strategy = "auto",
    reader: ItemReader | None = None,
) -> Iterator[tuple[list[ItemRecord], np.ndarray]]:
    """Yield (records, embeddings) per batch, in input order; failed rows have zero vectors.

    ``workers=None`` picks the decoding strategy for the device (see the module docstring); a
    number asks for that many worker processes (0: decode in the calling thread). ``strategy``
    forces one (the benchmark compares them). ``reader`` reads a remote source's items (in decode
    threads, never worker processes: it holds the fetch pool). Stage times are recorded when a
    ``timing.recording()`` is open.
    """
    if not refs:
        return
    times = timing.current()
    plan = embedder.pixel_plan
    chosen = _choose(strategy, workers, embedder.device.type, plan, threads_only=reader is not None)
    threaded = chosen in ("burst", "overlap")
    device_jpeg = chosen == "device-jpeg" and plan is not None and plan.tensor_steps is not None
    dataset = ImageDecodeDataset(refs, embedder.preprocess, embedder.embedder_id, limits, plan,
                                 device_jpeg=device_jpeg, times=times if threaded else None, reader=reader)
    batches = iter(_batches(dataset, chosen, batch_size, workers, embedder.device.type))
    dim = embedder.dim
    while True:
        with timing.stage("decode_wait"):
            batch = next(batches, None)
        if batch is None:
            return
        rows, pixels = _device_pixels(batch, embedder, plan, dataset)
        with timing.stage("encode", len(rows)):
            vectors = embedder.encode_images(pixels)
        if len(rows) == len(batch.records):
            yield batch.records, vectors
            continue
        embeddings = np.zeros((len(batch.records), dim), dtype=np.float32)
        embeddings[rows] = vectors
        yield batch.records, embeddings

