"""Object-storage prefixes as sources (``memory://`` and ``s3://`` on moto's server on 127.0.0.1):
crawled like a folder (sidecars included), the listing's size and ETag/mtime as change signals,
the same points as the same files indexed from a local folder."""

from __future__ import annotations

import io
import uuid
from pathlib import Path

import fsspec
import pytest
from helpers import collection_points
from PIL import Image

from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.sources.resolve import source_spec
from mmindex.schemas.config import Settings


def _jpeg(name: str) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="JPEG")
    return buffer.getvalue()


FILES = {
    "pets/cat.jpg": _jpeg("chelsea"),
    "pets/cat.txt": b"a cat on a rug",
    "pets/cat.json": b'{"year": 2009}',
    "space/rocket.jpg": _jpeg("rocket"),
    "notes/garden.md": b"# Garden\n\nThe cat sleeps in the sun by the roses.\n",
    "ignored.bin": b"\x00",
}


@pytest.fixture(params=["memory", "s3"])
def prefix(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return f"memory://bucket-{uuid.uuid4().hex}/photos/"
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex}/photos/"


def _put(url: str, files: dict[str, bytes]) -> None:
    fs, root = fsspec.core.url_to_fs(url)
    for rel, data in files.items():
        fs.pipe_file(f"{root.rstrip('/')}/{rel}", data)


def _by_path(settings: Settings) -> dict[str, dict]:
    return {point.payload["path"]: point.payload for point in collection_points(settings, "c").values()}


def test_a_prefix_indexes_like_a_folder_and_reruns_by_listing(
    prefix: str, tmp_path: Path, tiny_embedder: object
) -> None:
    assert source_spec(prefix).kind == "prefix"
    _put(prefix, FILES)
    folder = tmp_path / "folder"
    for rel, data in FILES.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    remote = Settings(root=tmp_path / "remote", workers=0, batch_size=4, shard_size=3)
    local = Settings(root=tmp_path / "local", workers=0, batch_size=4, shard_size=3)

    def run(source: str | Path, settings: Settings = remote, **extra: object):
        return index_source(IndexRequest(source, "c", **extra), settings, embedder=tiny_embedder)  # type: ignore[arg-type]

    first = run(prefix)
    assert (first.counts.embedded, first.counts.failed) == (3, 0)
    run(folder, local)
    remote_points, local_points = _by_path(remote), _by_path(local)
    assert set(remote_points) == set(local_points) == {"pets/cat.jpg", "space/rocket.jpg", "notes/garden.md"}
    for path, payload in remote_points.items():
        for field in ("sha256", "caption", "meta", "width", "height", "bytes", "text", "ext", "modality"):
            assert payload.get(field) == local_points[path].get(field), (path, field)
    assert remote_points["pets/cat.jpg"]["uri"].startswith(prefix.split("://")[0] + "://")

    again = run(prefix)
    assert (again.counts.unchanged, again.counts.embedded) == (3, 0)

    _put(prefix, {"space/rocket.jpg": _jpeg("astronaut"), "pets/cat.txt": b"a sleepy cat"})
    fs, root = fsspec.core.url_to_fs(prefix)
    fs.rm_file(f"{root.rstrip('/')}/notes/garden.md")
    edited = run(prefix)
    assert (edited.counts.changed, edited.counts.deleted, edited.counts.embedded) == (2, 1, 1)
    assert _by_path(remote)["pets/cat.jpg"]["caption"] == "a sleepy cat"
