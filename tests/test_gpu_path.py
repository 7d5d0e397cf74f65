"""The batched preprocessing and the device-JPEG path, checked on the CPU.

The device path (nvjpeg decode, resize and normalize on the GPU) is plain torch code that runs on
any device: here it runs with ``device=cpu`` (libjpeg-turbo instead of nvjpeg), which checks the
routing, the CPU fallback, input order and failure-as-data. Tests that need CUDA are marked.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mmindex.pipeline.embed.gpu_decode import assemble_on_device, decode_jpegs, device_jpeg_header
from mmindex.pipeline.embed.images import ImageDecodeDataset, collate_images, embed_images
from mmindex.pipeline.embed.model import ModelSpec, load_embedder
from mmindex.pipeline.embed.preprocess import FusedResizeCrop, plan_pixels
from mmindex.pipeline.sources.local import crawl_local
from mmindex.schemas.config import ImageLimits

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SIZES = [(640, 480), (480, 640), (333, 250), (224, 224), (100, 60), (1000, 300), (225, 900)]


def _photos() -> list[np.ndarray]:
    from skimage import data

    return [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]


def _jpeg_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90, **save)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def embedder(tiny_model_config: str, tiny_checkpoint: Path):
    return load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu", "fp32")


@pytest.fixture(scope="module")
def vit_transform():
    import open_clip

    return open_clip.image_transform(224, is_train=False)


@pytest.fixture(scope="module")
def mixed_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Device-decodable JPEGs and everything that must go to the CPU, including broken files."""
    root = tmp_path_factory.mktemp("mixed")
    astronaut, cat, coffee, rocket = (Image.fromarray(array) for array in _photos())
    (root / "a_astronaut.jpg").write_bytes(_jpeg_bytes(astronaut))
    (root / "b_cat.png").write_bytes(b"")  # empty file: failed
    cat.save(root / "c_cat.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: the CPU applies it
    (root / "d_rotated.jpg").write_bytes(_jpeg_bytes(coffee, exif=exif.tobytes()))
    good = _jpeg_bytes(rocket)
    (root / "e_truncated.jpg").write_bytes(good[: len(good) // 2])  # failed on the CPU
    (root / "f_cmyk.jpg").write_bytes(_jpeg_bytes(coffee.convert("CMYK")))
    (root / "g_gray.jpg").write_bytes(_jpeg_bytes(rocket.convert("L")))
    (root / "h_text.jpg").write_text("not an image at all\n")  # mislabeled: failed
    (root / "i_rocket.jpg").write_bytes(good)
    (root / "j_trailing.jpg").write_bytes(good + b"trailing bytes")
    (root / "k_coffee.jpg").write_bytes(_jpeg_bytes(coffee.resize((480, 640))))
    return root


# ---------------------------------------------------------------------------------------------
# Batched preprocessing equals the model's own transform


def test_plan_recognises_open_clip_eval_transforms(embedder, vit_transform) -> None:
    import open_clip
    from torchvision import transforms as tv

    for plan in (embedder.pixel_plan, plan_pixels(vit_transform, 224)):
        assert plan is not None
        assert isinstance(plan.steps[0], FusedResizeCrop)
        assert plan.tensor_steps is not None
    assert embedder.pixel_plan.size == (64, 64)
    squash = plan_pixels(open_clip.image_transform(224, is_train=False, resize_mode="squash"), 224)
    assert squash is not None and squash.tensor_steps is not None
    longest = plan_pixels(open_clip.image_transform(224, is_train=False, resize_mode="longest"), 224)
    assert longest is not None and longest.tensor_steps is None  # open_clip's own classes: PIL only
    odd = tv.Compose([tv.Lambda(lambda image: image), tv.ToTensor(), tv.Normalize([0.5] * 3, [0.5] * 3)])
    assert plan_pixels(odd, 224) is None
    assert plan_pixels(vit_transform, None) is None


@pytest.mark.parametrize("mode", ["shortest", "squash", "longest"])
def test_plan_matches_the_model_transform_on_real_photos(mode: str) -> None:
    import open_clip

    transform = open_clip.image_transform(224, is_train=False, resize_mode=mode)
    plan = plan_pixels(transform, 224)
    assert plan is not None
    level = 1.0 / 255 / min(plan.std)
    for photo in _photos():
        for size in SIZES:
            image = Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR)
            expected = transform(image)
            got = plan.normalize(torch.from_numpy(plan.to_array(image).copy())[None])[0]
            difference = (got - expected).abs()
            assert difference.max().item() <= 1.01 * level, (mode, size)
            assert (difference > 1e-6).float().mean().item() < 0.01, (mode, size)


def test_normalize_is_to_tensor_plus_normalize_exactly(vit_transform) -> None:
    from torchvision.transforms import functional as tvf

    plan = plan_pixels(vit_transform, 224)
    assert plan is not None
    arrays = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    expected = torch.stack([tvf.normalize(tvf.to_tensor(array), plan.mean, plan.std) for array in arrays])
    assert torch.equal(plan.normalize(torch.from_numpy(arrays)), expected)


def test_tensor_geometry_follows_pillow(embedder, vit_transform) -> None:
    plan = plan_pixels(vit_transform, 224)
    assert plan is not None
    for photo in _photos():
        for size in SIZES:
            image = Image.fromarray(photo).resize(size, Image.Resampling.BILINEAR)
            pil = plan.to_array(image).astype(np.int16)
            chw = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)[None]
            tensor = plan.tensor_geometry(chw)[0].permute(1, 2, 0).numpy().astype(np.int16)
            assert tensor.shape == pil.shape
            assert np.abs(tensor - pil).mean() < 1.0, size
    # and the embeddings agree (tiny model, its own 64x64 plan)
    tiny = embedder.pixel_plan
    for photo in _photos():
        image = Image.fromarray(photo)
        by_pil = tiny.normalize(torch.from_numpy(tiny.to_array(image).copy())[None])
        by_tensor = tiny.normalize(tiny.tensor_geometry(torch.from_numpy(photo.copy()).permute(2, 0, 1)[None]),
                                   channels_last=False)
        a, b = embedder.encode_images(by_pil)[0], embedder.encode_images(by_tensor)[0]
        assert float(np.dot(a, b)) >= 0.999


def test_items_without_a_plan_use_the_model_transform_whole(
    embedder, photo_corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = [ref for ref in crawl_local(photo_corpus) if ref.modality == "image"]
    planned = np.concatenate([v for _, v in embed_images(refs, embedder, batch_size=4, workers=None, limits=ImageLimits(10**8))])
    monkeypatch.setattr(embedder, "pixel_plan", None)
    whole = np.concatenate([v for _, v in embed_images(refs, embedder, batch_size=4, workers=None, limits=ImageLimits(10**8))])
    assert np.sum(planned * whole, axis=1).min() >= 0.9999


@pytest.mark.parametrize(("strategy", "workers"), [("burst", None), ("overlap", None), ("processes", 0), ("processes", 2)])
def test_decode_strategies_give_the_same_rows(embedder, mixed_corpus: Path, strategy: str, workers: int | None) -> None:
    refs = list(crawl_local(mixed_corpus))
    reference = [(records, vectors) for records, vectors in
                 embed_images(refs, embedder, batch_size=4, workers=None, limits=ImageLimits(10**8), strategy="burst")]
    got = list(embed_images(refs, embedder, batch_size=4, workers=workers, limits=ImageLimits(10**8), strategy=strategy))  # type: ignore[arg-type]
    assert [r.key for records, _ in got for r in records] == [r.key for records, _ in reference for r in records]
    assert [r.error for records, _ in got for r in records] == [r.error for records, _ in reference for r in records]
    np.testing.assert_allclose(np.concatenate([v for _, v in got]), np.concatenate([v for _, v in reference]), atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Device JPEG path: routing, fallback, order, failures


def test_only_plain_jpegs_are_routed_to_the_device(mixed_corpus: Path) -> None:
    def routed(name: str, max_pixels: int = 10**8) -> bool:
        return device_jpeg_header((mixed_corpus / name).read_bytes(), max_pixels) is not None

    assert routed("a_astronaut.jpg") and routed("i_rocket.jpg") and routed("k_coffee.jpg")
    header = device_jpeg_header((mixed_corpus / "k_coffee.jpg").read_bytes(), 10**8)
    assert header is not None and (header.width, header.height) == (480, 640)
    for name in ("c_cat.png", "d_rotated.jpg", "e_truncated.jpg", "f_cmyk.jpg", "g_gray.jpg", "h_text.jpg",
                 "j_trailing.jpg"):
        assert not routed(name), name
    assert not routed("a_astronaut.jpg", max_pixels=512 * 511)  # over the limit: the CPU reports it
    assert device_jpeg_header(b"", 10**8) is None


def test_decode_jpegs_isolates_files_the_decoder_rejects(mixed_corpus: Path) -> None:
    good = torch.frombuffer(bytearray((mixed_corpus / "i_rocket.jpg").read_bytes()), dtype=torch.uint8)
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff" + bytes(range(256)) * 8 + b"\xff\xd9"), dtype=torch.uint8)
    decoded = decode_jpegs([good, bad, good], torch.device("cpu"))
    assert decoded[1] is None
    assert decoded[0] is not None and decoded[0].dtype == torch.uint8 and decoded[0].shape[0] == 3
    assert torch.equal(decoded[0], decoded[2])
    assert decode_jpegs([], torch.device("cpu")) == []


def _rows(outputs) -> tuple[list, np.ndarray]:
    records = [record for batch, _ in outputs for record in batch]
    return records, np.concatenate([vectors for _, vectors in outputs])


@pytest.mark.parametrize("workers", [0, 2])
def test_device_path_matches_the_cpu_path_and_keeps_failures_as_data(embedder, mixed_corpus: Path, workers: int) -> None:
    refs = list(crawl_local(mixed_corpus))
    cpu_records, cpu_vectors = _rows(list(embed_images(refs, embedder, batch_size=4, workers=None, limits=ImageLimits(10**8))))
    dev_records, dev_vectors = _rows(list(
        embed_images(refs, embedder, batch_size=4, workers=workers, limits=ImageLimits(10**8), strategy="device-jpeg")))
    assert [r.key for r in dev_records] == [r.key for r in cpu_records] == [ref.key for ref in refs]
    assert [(r.status, r.error) for r in dev_records] == [(r.status, r.error) for r in cpu_records]
    failed = {Path(r.path).name: r.error for r in dev_records if r.status != "ok"}
    assert set(failed) == {"b_cat.png", "e_truncated.jpg", "h_text.jpg"}
    assert failed["b_cat.png"].startswith("empty file")
    assert failed["h_text.jpg"].startswith("not an image")
    assert failed["e_truncated.jpg"].startswith("corrupt image")
    for dev, cpu in zip(dev_records, cpu_records, strict=True):
        assert (dev.width, dev.height, dev.mime, dev.sha256, dev.bytes) == (cpu.width, cpu.height, cpu.mime, cpu.sha256, cpu.bytes)
    ok = np.array([r.status == "ok" for r in cpu_records])
    assert np.sum(dev_vectors[ok] * cpu_vectors[ok], axis=1).min() >= 0.999
    assert not dev_vectors[~ok].any()


def test_files_the_device_rejects_are_decoded_on_the_cpu(embedder, mixed_corpus: Path) -> None:
    refs = list(crawl_local(mixed_corpus))
    dataset = ImageDecodeDataset(refs, embedder.preprocess, embedder.embedder_id, ImageLimits(10**8), embedder.pixel_plan, device_jpeg=True)
    batch = collate_images([dataset[index] for index in range(len(dataset))])
    assert len(batch.jpegs()) == 3 and len(batch.pixel_rows) == 5
    assert batch.jpegs()[0].numpy().tobytes() == (mixed_corpus / "a_astronaut.jpg").read_bytes()

    def rejecting(jpegs, device):
        return [None] * len(jpegs)

    def fallback(row: int, data: bytes):
        from mmindex.pipeline.embed.images import decoded_pixels

        return decoded_pixels(batch.records[row], data, ImageLimits(10**8), embedder.pixel_plan, embedder.preprocess)

    rows, pixels = assemble_on_device(batch.jpeg_rows, batch.jpegs(), batch.pixel_rows, batch.pixels, embedder.pixel_plan,
                                      torch.device("cpu"), fallback, decoder=rejecting)
    cpu_rows = [row for row, record in enumerate(batch.records) if record.status == "ok"]
    assert rows.tolist() == sorted(cpu_rows) and len(rows) == 8
    reference = ImageDecodeDataset(refs, embedder.preprocess, embedder.embedder_id, ImageLimits(10**8), embedder.pixel_plan)
    expected = embedder.pixel_plan.normalize(collate_images([reference[index] for index in range(len(refs))]).pixels)
    assert torch.equal(pixels, expected)  # all decoded on the CPU: identical pixels, input order


# ---------------------------------------------------------------------------------------------
# On a real GPU


@CUDA
def test_cuda_device_path_matches_the_cpu(tiny_model_config: str, tiny_checkpoint: Path, mixed_corpus: Path) -> None:
    spec = ModelSpec(tiny_model_config, str(tiny_checkpoint))
    refs = list(crawl_local(mixed_corpus))
    cpu_records, cpu_vectors = _rows(list(embed_images(refs, load_embedder(spec, "cpu", "fp32"), batch_size=4,
                                                       workers=None, limits=ImageLimits(10**8))))
    gpu = load_embedder(spec, "cuda", "auto")
    gpu_records, gpu_vectors = _rows(list(embed_images(refs, gpu, batch_size=4, workers=None, limits=ImageLimits(10**8))))
    assert [(r.key, r.status, r.error) for r in gpu_records] == [(r.key, r.status, r.error) for r in cpu_records]
    ok = np.array([r.status == "ok" for r in cpu_records])
    assert np.sum(gpu_vectors[ok] * cpu_vectors[ok], axis=1).min() >= 0.999


@CUDA
def test_cuda_batches_are_pinned(embedder, mixed_corpus: Path) -> None:
    refs = list(crawl_local(mixed_corpus))
    dataset = ImageDecodeDataset(refs, embedder.preprocess, embedder.embedder_id, ImageLimits(10**8), embedder.pixel_plan)
    batch = collate_images([dataset[index] for index in range(len(refs))], pin=True)
    assert batch.pixels.is_pinned()
