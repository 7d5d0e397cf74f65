"""Stored embeddings equal open_clip called directly on the same files (fp32, cosine >= 0.9999)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.ingest import IndexRequest, index_source
from mmindex.schemas.config import Settings


@pytest.fixture(scope="module")
def shard_table(tmp_path_factory: pytest.TempPathFactory, photo_corpus: Path, tiny_checkpoint: Path, tiny_model_config: str):
    import pyarrow as pa

    root = tmp_path_factory.mktemp("parity-root")
    settings = Settings(root=root, workers=2, batch_size=4, device="cpu", precision="fp32")  # parity is an fp32 claim
    request = IndexRequest(photo_corpus, "parity", ModelSpec(tiny_model_config, str(tiny_checkpoint)))
    report = index_source(request, settings)
    assert report.counts.failed == 0
    shards = sorted((root / "shards" / "parity").rglob("*.parquet"))
    assert shards, "no shard written"
    return pa.concat_tables([pq.read_table(path) for path in shards])


def _reference_model(tiny_model_config: str, tiny_checkpoint: Path):
    import open_clip

    model, _, preprocess = open_clip.create_model_and_transforms(tiny_model_config, pretrained=str(tiny_checkpoint))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(tiny_model_config)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_image_embeddings_match_open_clip(shard_table, photo_corpus: Path, tiny_model_config: str, tiny_checkpoint: Path) -> None:
    import torch
    from PIL import Image

    model, preprocess, _ = _reference_model(tiny_model_config, tiny_checkpoint)
    rows = [row for row in shard_table.to_pylist() if row["modality"] == "image"]
    assert len(rows) == 6
    for row in rows:
        with Image.open(photo_corpus / row["path"]) as image:
            pixels = preprocess(image.convert("RGB")).unsqueeze(0)
        with torch.inference_mode():
            expected = model.encode_image(pixels)[0].numpy()
        stored = np.asarray(row["embedding"], dtype=np.float32)
        assert _cosine(stored, expected) >= 0.9999, row["path"]
        assert np.linalg.norm(stored) == pytest.approx(1.0, abs=1e-5)


def test_text_chunk_embeddings_match_open_clip(shard_table, tiny_model_config: str, tiny_checkpoint: Path) -> None:
    import torch

    model, _, tokenizer = _reference_model(tiny_model_config, tiny_checkpoint)
    rows = [row for row in shard_table.to_pylist() if row["modality"] == "text"]
    assert len(rows) >= 3
    with torch.inference_mode():
        expected = model.encode_text(tokenizer([row["text"] for row in rows])).numpy()
    for row, reference in zip(rows, expected, strict=True):
        assert _cosine(np.asarray(row["embedding"], dtype=np.float32), reference) >= 0.9999


def test_shards_are_plain_parquet_with_the_item_schema(shard_table) -> None:
    names = set(shard_table.column_names)
    assert {"key", "point_id", "modality", "sha256", "embedder_id", "status", "error", "embedding"} <= names
    assert shard_table.schema.field("embedding").type.list_size == 32
    assert set(shard_table.column("status").to_pylist()) == {"ok"}
    assert len(set(shard_table.column("point_id").to_pylist())) == shard_table.num_rows


def test_checkpoint_and_local_dir_load_the_same_weights(tiny_checkpoint: Path, tiny_local_dir: Path, tiny_model_config: str) -> None:
    from_file = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu")
    from_dir = load_embedder(ModelSpec(f"local-dir:{tiny_local_dir}"), "cpu")
    texts = ["a photo of a cat", "a rocket"]
    np.testing.assert_allclose(from_file.encode_texts(texts), from_dir.encode_texts(texts), atol=1e-6)
    assert from_file.dim == from_dir.dim == 32
