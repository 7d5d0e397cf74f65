"""Reduced precision: what ``auto`` picks, and that bf16/fp16 vectors stay within cosine 0.999 of
fp32 on real photos and texts (so precision is not part of the embedder id)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mmindex.pipeline.embed import precision as precision_module
from mmindex.pipeline.embed.images import embed_images
from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.embed.precision import ResolvedPrecision, cpu_flags, resolve_precision
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.sources.local import crawl_local
from mmindex.schemas.config import ImageLimits, Settings

TEXTS = ["a photo of a cat", "an astronaut in a white suit", "a rocket on the launch pad", "coffee"]


@pytest.fixture(scope="module")
def fp32_embedder(tiny_model_config: str, tiny_checkpoint: Path):
    return load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", "fp32")


def _image_vectors(embedder, corpus: Path) -> tuple[list[str], np.ndarray]:
    refs = [ref for ref in crawl_local(corpus) if ref.modality == "image"]
    keys, vectors = [], []
    for records, embeddings in embed_images(refs, embedder, batch_size=4, workers=None, limits=ImageLimits(10**8)):
        assert all(record.status == "ok" for record in records)
        keys.extend(record.key for record in records)
        vectors.append(embeddings)
    return keys, np.concatenate(vectors)


@pytest.mark.parametrize("name", ["bf16", "fp16"])
def test_reduced_precision_vectors_stay_within_0_999_of_fp32(
    name: str, fp32_embedder, photo_corpus: Path, tiny_model_config: str, tiny_checkpoint: Path
) -> None:
    reduced = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", name)  # type: ignore[arg-type]
    assert reduced.precision == ResolvedPrecision(name, "weights")  # type: ignore[arg-type]
    keys32, images32 = _image_vectors(fp32_embedder, photo_corpus)
    keys, images = _image_vectors(reduced, photo_corpus)
    assert keys == keys32 and len(keys) == 6
    cosines = np.sum(images32 * images, axis=1)
    assert cosines.min() >= 0.999, dict(zip(keys, cosines.tolist(), strict=True))
    assert np.allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    assert images.dtype == np.float32
    texts32, texts = fp32_embedder.encode_texts(TEXTS), reduced.encode_texts(TEXTS)
    assert np.sum(texts32 * texts, axis=1).min() >= 0.999


def test_precision_is_not_part_of_the_embedder_id(fp32_embedder, tiny_model_config: str, tiny_checkpoint: Path) -> None:
    bf16 = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", "bf16")
    assert bf16.embedder_id == fp32_embedder.embedder_id


def test_fp32_embedder_keeps_fp32_weights(fp32_embedder) -> None:
    import torch

    assert fp32_embedder.precision == ResolvedPrecision("fp32", "fp32")
    assert {parameter.dtype for parameter in fp32_embedder.model.parameters()} == {torch.float32}


def test_auto_is_fp16_autocast_on_cuda_and_bf16_weights_on_capable_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_precision("auto", "cuda") == ResolvedPrecision("fp16", "autocast")
    assert resolve_precision("bf16", "cuda") == ResolvedPrecision("bf16", "autocast")
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_precision("auto", "cpu") == ResolvedPrecision("bf16", "weights")
    monkeypatch.setattr(precision_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_precision("auto", "cpu") == ResolvedPrecision("fp32", "fp32")
    assert resolve_precision("fp16", "cpu") == ResolvedPrecision("fp16", "weights")
    assert resolve_precision("fp32", "cuda") == ResolvedPrecision("fp32", "fp32")


def test_unknown_precision_is_a_config_error(tiny_model_config: str, tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int8", "cpu")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown precision"):
        load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", "int8")  # type: ignore[arg-type]


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n\nprocessor\t: 1\nflags\t: fpu\n")
    assert {"amx_bf16", "avx512f"} <= cpu_flags(cpuinfo)
    assert cpu_flags(tmp_path / "missing") == frozenset()


def test_settings_take_a_precision(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("MMINDEX_CONFIG", str(tmp_path / "none.toml"))
    monkeypatch.delenv("MMINDEX_PRECISION", raising=False)
    assert Settings().precision == "auto"
    monkeypatch.setenv("MMINDEX_PRECISION", "bf16")
    assert Settings().precision == "bf16"
    assert Settings(precision="fp32").precision == "fp32"
    with pytest.raises(ValidationError):
        Settings(precision="int8")


def test_stored_bf16_vectors_stay_within_0_999_of_open_clip_fp32(
    photo_corpus: Path, tiny_model_config: str, tiny_checkpoint: Path, tmp_path: Path
) -> None:
    """End to end: index with a bf16 embedder, read the Parquet shards, compare with open_clip."""
    import open_clip
    import pyarrow.parquet as pq
    import torch
    from PIL import Image

    from mmindex.pipeline.ingest.run import IndexRequest, index_source

    bf16 = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", "bf16")
    settings = Settings(root=tmp_path / "root", batch_size=4, device="cpu", precision="bf16")
    index_source(IndexRequest(photo_corpus, "bf16"), settings, embedder=bf16)
    rows = [row for shard in sorted((tmp_path / "root" / "shards").rglob("*.parquet"))
            for row in pq.read_table(shard).to_pylist() if row["modality"] == "image"]
    assert len(rows) == 6 and all(row["status"] == "ok" for row in rows)
    model, _, preprocess = open_clip.create_model_and_transforms(tiny_model_config, pretrained=str(tiny_checkpoint))
    model.eval()
    for row in rows:
        with Image.open(photo_corpus / row["path"]) as image, torch.inference_mode():
            expected = model.encode_image(preprocess(image.convert("RGB")).unsqueeze(0))[0].numpy()
        stored = np.asarray(row["embedding"], dtype=np.float32)
        cosine = float(np.dot(stored, expected) / (np.linalg.norm(stored) * np.linalg.norm(expected)))
        assert cosine >= 0.999, (row["path"], cosine)
