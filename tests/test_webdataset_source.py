"""WebDataset tars as sources: a tar, a brace pattern and a folder of tars (local and on
``memory://``); members grouped by key (image + caption + metadata); an unchanged tar re-embeds
nothing and a rewritten one only its changed members."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import fsspec
import pytest
from helpers import collection_points
from PIL import Image

from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.sources.resolve import source_options, source_spec
from mmindex.pipeline.sources.webdataset import WebDatasetSource, expand_braces
from mmindex.schemas.config import Settings


def _jpeg(name: str) -> bytes:
    from skimage import data

    buffer = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buffer, format="JPEG")
    return buffer.getvalue()


def make_tar(samples: dict[str, dict[str, bytes]], mtime: int = 1_700_000_000) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for key, members in samples.items():
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime = len(data), mtime
                archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


SHARDS = {
    "shard-000.tar": {"s/cat": {"jpg": _jpeg("chelsea"), "txt": b"a cat", "json": b'{"license": "cc-by"}'},
                      "s/rocket": {"jpg": _jpeg("rocket"), "txt": b"a rocket"}},
    "shard-001.tar": {"s/coffee": {"jpg": _jpeg("coffee"), "cls": b"3"},
                      "s/lonely": {"txt": b"a caption without an image"}},
}


def test_brace_patterns_expand_in_order() -> None:
    assert expand_braces("a/{000..002}.tar") == ["a/000.tar", "a/001.tar", "a/002.tar"]
    assert expand_braces("{x,y}-{1..2}.tar") == ["x-1.tar", "x-2.tar", "y-1.tar", "y-2.tar"]
    assert source_spec("s3://b/shards/{000000..000099}.tar").kind == "webdataset"


@pytest.mark.parametrize("where", ["local", "memory"])
def test_tars_index_by_key_and_rerun_by_member(where: str, tmp_path: Path, tiny_embedder: object) -> None:
    if where == "local":
        base = tmp_path / "shards"
        base.mkdir()
        for name, samples in SHARDS.items():
            (base / name).write_bytes(make_tar(samples))
        pattern, folder = f"{base}/shard-{{000..001}}.tar", str(base)
    else:
        fs = fsspec.filesystem("memory")
        base_url = f"memory://wds-{uuid.uuid4().hex}"
        for name, samples in SHARDS.items():
            fs.pipe_file(f"{base_url}/{name}", make_tar(samples))
        pattern, folder = f"{base_url}/shard-{{000..001}}.tar", base_url
    spec = source_spec(pattern)
    assert spec.kind == "webdataset"
    refs = list(WebDatasetSource("w", spec).items())
    assert [ref.path for ref in refs] == ["shard-000.tar/s/cat.jpg", "shard-000.tar/s/rocket.jpg",
                                          "shard-001.tar/s/coffee.jpg"]
    assert [ref.caption for ref in refs] == ["a cat", "a rocket", None]
    assert json.loads(refs[0].metadata_json or "{}") == {"license": "cc-by"}
    by_folder = WebDatasetSource("w", source_spec(folder, source_options(format="webdataset"))).items()
    assert [ref.path for ref in by_folder] == [ref.path for ref in refs]

    settings = Settings(root=tmp_path / "root", workers=0, batch_size=4, shard_size=2)

    def run():
        return index_source(IndexRequest(pattern, "c"), settings, embedder=tiny_embedder)  # type: ignore[arg-type]

    first = run()
    assert (first.counts.embedded, first.counts.failed) == (3, 0)
    points = {point.payload["path"]: point.payload for point in collection_points(settings, "c").values()}
    assert points["shard-000.tar/s/cat.jpg"]["caption"] == "a cat"
    assert points["shard-000.tar/s/cat.jpg"]["meta"] == {"license": "cc-by"}
    assert points["shard-001.tar/s/coffee.jpg"]["width"] == 600
    assert run().counts.unchanged == 3  # unchanged tars: nothing embedded

    changed = {**SHARDS["shard-000.tar"], "s/rocket": {"jpg": _jpeg("astronaut"), "txt": b"a rocket"}}
    data = make_tar(changed, mtime=1_700_000_100)
    if where == "local":
        (base / "shard-000.tar").write_bytes(data)
    else:
        fs.pipe_file(f"{base_url}/shard-000.tar", data)
    edited = run()
    assert (edited.counts.embedded, edited.counts.unchanged) == (2, 1)  # the members with a new mtime
