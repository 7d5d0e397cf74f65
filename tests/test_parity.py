"""Stored embeddings equal open_clip called directly on the same files (fp32, cosine >= 0.9999)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.schemas.config import ImageLimits, Settings


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


def _photo_mosaic_jpeg(width: int, height: int, seed: int, exif_orientation: int | None = None) -> bytes:
    """A large JPEG with real photographic detail at native scale: 256-px tiles of scikit-image photos."""
    import io

    from PIL import Image
    from skimage import data

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket(), data.immunohistochemistry()]
    rng = np.random.default_rng(seed)
    canvas = np.zeros((height, width, 3), np.uint8)
    for top in range(0, height, 256):
        for left in range(0, width, 256):
            photo = photos[rng.integers(len(photos))]
            y, x = rng.integers(0, photo.shape[0] - 256), rng.integers(0, photo.shape[1] - 256)
            tile = photo[y : y + 256, x : x + 256, :3]
            canvas[top : top + 256, left : left + 256] = tile[: height - top, : width - left]
    out = io.BytesIO()
    image = Image.fromarray(canvas)
    if exif_orientation is None:
        image.save(out, "JPEG", quality=92)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        image.save(out, "JPEG", quality=92, exif=exif.tobytes())
    return out.getvalue()


@pytest.mark.parametrize("size", [(2016, 1512), (1920, 1080), (1080, 1920)])
def test_large_jpegs_decode_reduced_within_a_few_levels(size: tuple[int, int]) -> None:
    """A JPEG over twice the model's input decodes at a reduced scale; the model's input pixels
    stay within a few levels of the full decode (mean < 1, 99% within 3) and the reported size
    is the file's own."""
    import io

    import open_clip
    from PIL import Image

    from mmindex.pipeline.embed.decode import decode_image
    from mmindex.pipeline.embed.preprocess import plan_pixels

    transform = open_clip.image_transform(224, is_train=False)
    plan = plan_pixels(transform, 224)
    assert plan is not None and plan.decode_min_side == 448
    data = _photo_mosaic_jpeg(*size, seed=sum(size))
    reduced = decode_image(data, ImageLimits(10**9), plan.decode_min_side)
    exact = decode_image(data, ImageLimits(10**9))
    assert (reduced.width, reduced.height) == (exact.width, exact.height) == size
    assert min(reduced.image.size) < min(size) and min(reduced.image.size) >= 448
    fast, full = plan.to_array(reduced.image).astype(int), plan.to_array(exact.image).astype(int)
    with Image.open(io.BytesIO(data)) as image:
        reference = (transform(image.convert("RGB")).numpy() * np.array(transform.transforms[-1].std)[:, None, None]
                     + np.array(transform.transforms[-1].mean)[:, None, None]) * 255
    assert np.abs(full - reference.transpose(1, 2, 0)).max() <= 1.01  # the exact path is open_clip's
    difference = np.abs(fast - full)
    assert difference.mean() < 1.0 and np.percentile(difference, 99) <= 3, (difference.mean(), np.percentile(difference, 99))


def test_small_jpegs_and_other_formats_decode_every_pixel() -> None:
    import io

    from PIL import Image

    from mmindex.pipeline.embed.decode import decode_image

    jpeg = _photo_mosaic_jpeg(640, 480, seed=1)
    assert decode_image(jpeg, ImageLimits(10**9), 448).image.size == (640, 480)  # not twice the target: full size
    png = io.BytesIO()
    Image.open(io.BytesIO(_photo_mosaic_jpeg(2016, 1512, seed=2))).save(png, "PNG")
    assert decode_image(png.getvalue(), ImageLimits(10**9), 448).image.size == (2016, 1512)  # only JPEGs have DCT scaling


def test_reduced_decode_keeps_exif_orientation_and_reported_size() -> None:
    from mmindex.pipeline.embed.decode import decode_image

    rotated = _photo_mosaic_jpeg(2016, 1512, seed=3, exif_orientation=6)  # stored landscape, shown portrait
    reduced, exact = decode_image(rotated, ImageLimits(10**9), 448), decode_image(rotated, ImageLimits(10**9))
    assert (reduced.width, reduced.height) == (exact.width, exact.height) == (1512, 2016)
    assert reduced.image.size == (756, 1008)  # a quarter turn of the 1/2-scale decode


def test_large_jpeg_stored_embedding_matches_open_clip(tmp_path: Path, tiny_model_config: str, tiny_checkpoint: Path) -> None:
    """End to end on a 12-megapixel photo mosaic: the stored vector (reduced decode) keeps cosine
    >= 0.9999 to open_clip's on the full image."""
    import io

    import torch
    from PIL import Image

    corpus = tmp_path / "photos"
    corpus.mkdir()
    data = _photo_mosaic_jpeg(4032, 3024, seed=4)
    (corpus / "big.jpg").write_bytes(data)
    settings = Settings(root=tmp_path / "root", workers=0, device="cpu", precision="fp32", text_model="none")
    report = index_source(IndexRequest(corpus, "big", ModelSpec(tiny_model_config, str(tiny_checkpoint))), settings)
    assert report.counts.failed == 0
    (row,) = pa_rows(tmp_path / "root" / "shards" / "big")
    assert (row["width"], row["height"]) == (4032, 3024)
    model, preprocess, _ = _reference_model(tiny_model_config, tiny_checkpoint)
    with Image.open(io.BytesIO(data)) as image, torch.inference_mode():
        expected = model.encode_image(preprocess(image.convert("RGB")).unsqueeze(0))[0].numpy()
    assert _cosine(np.asarray(row["embedding"], dtype=np.float32), expected) >= 0.9999


def pa_rows(shard_dir: Path) -> list[dict]:
    return [row for path in sorted(shard_dir.rglob("*.parquet")) for row in pq.read_table(path).to_pylist()]
