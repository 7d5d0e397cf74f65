"""Index roots on object storage (fsspec URLs): the whole ingest — first run, an incremental run
after an edit, a delete, a rename and a new file, and a rebuild from Parquet — gives exactly the
points (ids, payloads, vectors) of the same ingest with a local root. Roots: ``memory://``,
``file://`` (fsspec's local file system), and ``s3://`` against moto's S3 server (skipped when
moto or s3fs is not installed: ``pip install -e ".[dev]"``)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from helpers import collection_points
from PIL import Image

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ingest.run import (
    IndexRequest,
    RunSession,
    holding_ingest_lock,
    index_source,
    plan_run,
)
from mmindex.pipeline.ingest.units import RunDir
from mmindex.pipeline.io.root import RemotePath, parse_root
from mmindex.pipeline.manage.maintenance import rebuild_collection
from mmindex.schemas.config import Settings


@pytest.fixture(params=["memory", "file", "s3"])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://mmindex-{uuid.uuid4().hex}/index"
    if request.param == "file":
        return (tmp_path / "file-root" / "index").as_uri()
    bucket = request.getfixturevalue("s3_bucket")
    return f"s3://{bucket}/{uuid.uuid4().hex}/index"



@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    from skimage import data

    root = tmp_path / "corpus"
    (root / "pets").mkdir(parents=True)
    (root / "space").mkdir()
    Image.fromarray(data.chelsea()).save(root / "pets" / "cat.jpg")
    Image.fromarray(data.astronaut()).save(root / "space" / "astronaut.png")
    Image.fromarray(data.rocket()).save(root / "space" / "rocket.jpg")
    (root / "pets" / "cat.txt").write_text("a cat on a rug", encoding="utf-8")
    (root / "notes.md").write_text("\n\n".join(f"Paragraph {n}: cats sleep in the sun." for n in range(8)), encoding="utf-8")
    (root / "short.txt").write_text("Rockets go to space.", encoding="utf-8")
    return root


def _settings(root: str | Path, qdrant_dir: Path) -> Settings:
    return Settings(root=root, workers=0, batch_size=8, shard_size=3, qdrant_url=f"local:{qdrant_dir}")


def _points(settings: Settings) -> dict[str, tuple[dict, np.ndarray]]:
    found = collection_points(settings, "c", with_vectors=True)
    return {point_id: (point.payload, np.asarray(point.vector)) for point_id, point in found.items()}


def _assert_same_points(local: Settings, remote: Settings) -> None:
    expected, got = _points(local), _points(remote)
    assert expected and set(got) == set(expected)
    for point_id, (payload, vector) in expected.items():
        assert got[point_id][0] == payload
        np.testing.assert_allclose(got[point_id][1], vector, rtol=1e-6, atol=1e-7)


def _edit(corpus: Path) -> None:
    from skimage import data

    Image.fromarray(data.coffee()).save(corpus / "coffee.webp")  # new
    (corpus / "space" / "astronaut.png").unlink()  # deleted
    (corpus / "archive").mkdir()
    shutil.move(corpus / "space" / "rocket.jpg", corpus / "archive" / "rocket.jpg")  # renamed
    (corpus / "short.txt").write_text("Rockets go to space, and come back.", encoding="utf-8")  # changed


def test_ingest_on_object_storage_matches_a_local_root(remote_url: str, corpus: Path, tmp_path: Path, tiny_embedder) -> None:
    local = _settings(tmp_path / "local-root", tmp_path / "qdrant-local")
    remote = _settings(remote_url, tmp_path / "qdrant-remote")
    assert isinstance(remote.root, RemotePath) and str(remote.root).rstrip("/").endswith("index")

    reports = [index_source(IndexRequest(corpus, "c"), s, embedder=tiny_embedder) for s in (local, remote)]
    assert reports[1].plan == reports[0].plan and reports[1].counts.shards_written == reports[0].counts.shards_written > 1
    _assert_same_points(local, remote)

    _edit(corpus)
    reports = [index_source(IndexRequest(corpus, "c"), s, embedder=tiny_embedder) for s in (local, remote)]
    assert reports[1].plan == reports[0].plan
    assert reports[1].plan["new"] == reports[1].plan["renamed"] == reports[1].plan["deleted"] == 1
    _assert_same_points(local, remote)

    # Everything the index keeps is on the object store, under the root.
    root = remote.root
    assert isinstance(root, RemotePath)
    version = collection_state(remote, "c").current
    shard_names = sorted(path.name for path in (root / "shards" / "c" / version.physical_name).iterdir())
    local_names = sorted(path.name for path in (local.root / "shards" / "c" / version.physical_name).iterdir())
    assert shard_names == local_names
    assert (root / "state.json").exists()
    assert (root / "catalog" / "c" / f"{version.physical_name}.parquet").exists()
    assert len((root / "runs" / "c").iterdir()) == 2
    assert collection_state(remote, "c").current.applied_through == collection_state(local, "c").current.applied_through

    # An unchanged re-run writes nothing; a rebuild from the Parquet shards gives the same points.
    again = index_source(IndexRequest(corpus, "c"), remote, embedder=tiny_embedder)
    assert again.counts.shards_written == 0 and again.plan["unchanged"] > 0
    assert rebuild_collection(remote, "c").points == len(_points(local))
    _assert_same_points(local, remote)


def test_a_unit_is_written_once_on_object_storage(corpus: Path, tmp_path: Path, tiny_embedder) -> None:
    """Exactly-once through the root layer: a unit whose shard object exists is only re-applied,
    and workers leave ``state.json`` alone on an object store (finalize moves the marker)."""
    settings = _settings(f"memory://mmindex-{uuid.uuid4().hex}/index", tmp_path / "qdrant")
    root = settings.root
    assert isinstance(root, RemotePath)
    with holding_ingest_lock(settings, "c"):
        run = plan_run(IndexRequest(corpus, "c"), settings, tiny_embedder).run
        assert run is not None and len(run.seqs) >= 2
        with RunSession(settings, "c", run.run_id, embedder=tiny_embedder) as session:
            outcomes = {seq: session.process(seq) for seq in reversed(run.seqs)}
            assert collection_state(settings, "c").current.applied_through == 0
            shard_dir = root / "shards" / "c" / collection_state(settings, "c").current.physical_name
            written = {path.name: path.read_bytes() for path in shard_dir.iterdir()}
            assert len(written) == len(run.seqs)

            # A worker died after writing the shard, before recording the unit: the redo re-applies it.
            RunDir(root, "c", run.run_id).outcome_path(run.seqs[0]).unlink()
            redone = session.process(run.seqs[0])
            assert redone.reapplied and redone.shard == outcomes[run.seqs[0]].shard
            assert {path.name: path.read_bytes() for path in shard_dir.iterdir()} == written
            session.finalize()
    assert collection_state(settings, "c").current.applied_through == max(run.seqs)


def test_object_storage_root_needs_a_qdrant_server(corpus: Path, tiny_embedder) -> None:
    settings = Settings(root=f"memory://mmindex-{uuid.uuid4().hex}/index", workers=0)
    with pytest.raises(ConfigError, match="--qdrant-url"):
        index_source(IndexRequest(corpus, "c"), settings, embedder=tiny_embedder)


def test_root_urls_and_paths_are_parsed_apart(tmp_path: Path) -> None:
    assert parse_root(str(tmp_path)) == tmp_path
    assert parse_root("~/x") == Path.home() / "x"
    memory = parse_root("memory://bucket/prefix/")
    assert isinstance(memory, RemotePath) and (memory / "a").parent == memory and (memory / "a").name == "a"
    assert parse_root(str(memory)) == memory
    assert Settings(root="memory://bucket/prefix").model_dump()["root"] == str(memory)


def test_prefect_flow_on_object_storage_matches_the_cli(
    prefect_api: str, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path
) -> None:
    """The ingest flow (plan, one task per shard, finalize) with a root on object storage, against
    a real Prefect server: the same points as the CLI's ingest into a local root."""
    pytest.importorskip("prefect")
    from prefect.client.orchestration import get_client

    from mmindex.flows.ingest import ingest_flow, root_limit_name
    from mmindex.pipeline.ingest.options import IndexOptions

    model = f"local-dir:{tiny_local_dir}"
    url = f"memory://mmindex-{uuid.uuid4().hex}/index"
    local = Settings(root=tmp_path / "local-root", model=model, pretrained=None, workers=0, batch_size=4, shard_size=3,
                     qdrant_url=f"local:{tmp_path / 'qdrant-local'}")
    index_source(IndexRequest(photo_corpus, "c"), local)
    result = ingest_flow(IndexOptions(source=str(photo_corpus), collection="c", root=url, model=model, workers=0, batch_size=4,
                                      shard_size=3, qdrant_url=f"local:{tmp_path / 'qdrant-remote'}"))
    assert result["shards"] >= 3 and result["failed"] == 0
    remote = _settings(url, tmp_path / "qdrant-remote")
    _assert_same_points(local, remote)
    assert collection_state(remote, "c").current.applied_through == collection_state(local, "c").current.applied_through
    # The flow held the root's writer slot (a global concurrency limit of 1) and gave it back.
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(root_limit_name(remote.root))
    assert limit.limit == 1 and limit.active_slots == 0
