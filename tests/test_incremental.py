"""Incremental reindex on a real corpus edited between runs, on both store backends: exactly the
changed items are embedded, the point set and payloads are exact, deletes propagate."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import CountingEmbedder
from PIL import Image

from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.ids import chunk_key, item_key, point_id
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.search.query import SearchQuery, search
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings

LONG_NOTE = "\n\n".join(f"Paragraph {n}: cats sleep in the sun and chase small birds in the garden." for n in range(12))


@pytest.fixture(params=["edge", "qdrant-client"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    url = None if request.param == "edge" else f"local:{tmp_path / 'qdrant-client'}"
    return Settings(root=tmp_path / "root", workers=0, batch_size=8, shard_size=4, qdrant_url=url)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, name)()


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    root = tmp_path / "corpus"
    (root / "pets").mkdir(parents=True)
    (root / "space").mkdir()
    Image.fromarray(_photo("chelsea")).save(root / "pets" / "cat.jpg")
    Image.fromarray(_photo("astronaut")).save(root / "space" / "astronaut.png")
    Image.fromarray(_photo("rocket")).save(root / "space" / "rocket.jpg")
    Image.fromarray(_photo("coffee")).save(root / "coffee.webp")
    (root / "pets" / "cat.txt").write_text("a cat on a rug", encoding="utf-8")
    (root / "notes.md").write_text(LONG_NOTE, encoding="utf-8")
    (root / "short.txt").write_text("Rockets go to space.", encoding="utf-8")
    return root


def run(settings: Settings, corpus: Path, embedder=None, **options):
    return index_source(IndexRequest(corpus, "c", **options), settings, embedder=embedder)


def key(corpus: Path, relative: str) -> str:
    return item_key(corpus.resolve().as_posix(), relative)


def stored_points(settings: Settings) -> dict[str, dict]:
    """Every point in the collection's current version, by id, via count + retrieve of all ids in shards."""
    version = collection_state(settings, "c").current
    store = open_store(settings)
    try:
        shard_dir = settings.root / "shards" / "c" / version.physical_name
        ids = {row for path in shard_dir.glob("[0-9]*.parquet") for row in pq.read_table(path, columns=["point_id"]).column(0).to_pylist()}
        found = {point.id: point.payload for point in store.retrieve(version.physical_name, sorted(ids))}
        assert store.count(version.physical_name) == len(found), "points exist that no shard row names"
        return found
    finally:
        store.close()


def expected_keys(settings: Settings, corpus: Path, embedder) -> set[str]:
    """Keys of the points the corpus should have: images, and chunk keys of documents."""
    from mmindex.pipeline.embed.chunking import chunk_text

    keys: set[str] = set()
    for path in corpus.rglob("*"):
        rel = path.relative_to(corpus).as_posix()
        if path.suffix in {".jpg", ".png", ".webp"}:
            keys.add(key(corpus, rel))
        elif path.suffix in {".md", ".txt"} and not path.with_suffix(".jpg").exists():
            chunks = chunk_text(path.read_text(), embedder.count_tokens, embedder.context_length - 2, 16)
            keys.update(chunk_key(key(corpus, rel), chunk.index) for chunk in chunks)
    return keys


def assert_exact_points(settings: Settings, corpus: Path, embedder) -> dict[str, dict]:
    points = stored_points(settings)
    wanted = expected_keys(settings, corpus, embedder)
    assert {payload["key"] for payload in points.values()} == wanted
    assert set(points) == {point_id(k) for k in wanted}
    return points


def test_unchanged_rerun_loads_no_model_and_writes_nothing(settings: Settings, corpus: Path, tiny_embedder, monkeypatch) -> None:
    first = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert first.plan["new"] == 6 and first.counts.failed == 0

    def no_model(*args, **kwargs):
        raise AssertionError("the model must not be loaded when nothing changed")

    monkeypatch.setattr("mmindex.pipeline.embed.model.load_embedder", no_model)
    shards_before = sorted((settings.root / "shards").rglob("[0-9]*.parquet"))
    second = run(settings, corpus)
    assert second.plan["unchanged"] == 6
    assert second.embedded_keys == [] and second.counts.points_upserted == 0 and second.counts.shards_written == 0
    assert sorted((settings.root / "shards").rglob("[0-9]*.parquet")) == shards_before
    assert_exact_points(settings, corpus, tiny_embedder)


def test_edits_embed_exactly_what_changed(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    before = stored_points(settings)
    rocket_vector_key = point_id(key(corpus, "space/rocket.jpg"))

    Image.fromarray(_photo("camera")).convert("RGB").save(corpus / "coffee.webp")  # modified content
    (corpus / "space" / "astronaut.png").unlink()  # deleted
    Image.fromarray(_photo("hubble_deep_field")[:300, :300]).save(corpus / "space" / "hubble.jpg")  # new
    (corpus / "archive").mkdir()
    shutil.move(corpus / "space" / "rocket.jpg", corpus / "archive" / "rocket.jpg")  # renamed
    (corpus / "pets" / "cat.txt").write_text("a sleepy cat on a red rug", encoding="utf-8")  # sidecar edited
    edited = LONG_NOTE.replace("Paragraph 11: cats sleep", "Paragraph 11: dogs bark")  # one chunk changes
    (corpus / "notes.md").write_text(edited, encoding="utf-8")

    spy = CountingEmbedder(tiny_embedder)
    report = run(settings, corpus, spy)
    assert report.plan == {"new": 1, "changed": 3, "renamed": 1, "deleted": 1, "unchanged": 1, "retried": 0, "failed_unchanged": 0}
    assert sorted(report.embedded_keys) == sorted([key(corpus, "coffee.webp"), key(corpus, "space/hubble.jpg"), key(corpus, "notes.md")])
    assert spy.images == 2  # the modified and the new image; the renamed one reuses its vector
    assert 0 < len(spy.texts) < len(expected_keys(settings, corpus, tiny_embedder)) - 4  # only the edited chunks
    assert all("dogs bark" in text for text in spy.texts)
    assert report.counts.chunks_reused > 0

    points = assert_exact_points(settings, corpus, tiny_embedder)
    moved = points[point_id(key(corpus, "archive/rocket.jpg"))]
    assert moved["path"] == "archive/rocket.jpg" and moved["sha256"] == before[rocket_vector_key]["sha256"]
    assert rocket_vector_key not in points
    assert points[point_id(key(corpus, "pets/cat.jpg"))]["caption"] == "a sleepy cat on a red rug"
    assert point_id(key(corpus, "space/astronaut.png")) not in points

    third = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert third.embedded_keys == [] and third.plan["unchanged"] == 6


def test_renamed_item_keeps_its_vector(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    version = collection_state(settings, "c").current
    old_id, new_id = point_id(key(corpus, "pets/cat.jpg")), point_id(key(corpus, "kitty.jpg"))
    store = open_store(settings)
    old_vector = store.retrieve(version.physical_name, [old_id], with_vectors=True)[0].vector
    store.close()
    shutil.move(corpus / "pets" / "cat.jpg", corpus / "kitty.jpg")
    spy = CountingEmbedder(tiny_embedder)
    report = run(settings, corpus, spy)
    assert report.plan["renamed"] == 1 and spy.images == 0
    store = open_store(settings)
    try:
        assert store.retrieve(version.physical_name, [old_id]) == []
        moved = store.retrieve(version.physical_name, [new_id], with_vectors=True)[0]
    finally:
        store.close()
    np.testing.assert_allclose(moved.vector, old_vector, atol=1e-6)
    assert "caption" not in moved.payload  # the caption sidecar stayed behind in pets/


def test_shrunk_document_loses_its_old_chunks(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    (corpus / "notes.md").write_text("Now a single short paragraph.", encoding="utf-8")
    report = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert report.counts.points_deleted >= 2
    points = assert_exact_points(settings, corpus, tiny_embedder)
    chunks = [p for p in points.values() if p.get("doc_key") == key(corpus, "notes.md")]
    assert [p["chunk_index"] for p in chunks] == [0]


def test_deleted_document_and_no_delete(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    (corpus / "notes.md").unlink()
    kept = run(settings, corpus, CountingEmbedder(tiny_embedder), delete_missing=False)
    assert kept.plan["deleted"] == 0
    assert any(p.get("doc_key") == key(corpus, "notes.md") for p in stored_points(settings).values())
    removed = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert removed.plan["deleted"] == 1
    assert_exact_points(settings, corpus, tiny_embedder)


def test_failed_items_are_retried_when_changed_or_asked(settings: Settings, corpus: Path, tiny_embedder) -> None:
    (corpus / "broken.jpg").write_bytes(b"not a jpeg")
    first = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert first.counts.failed == 1
    again = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert again.plan["failed_unchanged"] == 1 and again.embedded_keys == []
    retried = run(settings, corpus, CountingEmbedder(tiny_embedder), retry_failed=True)
    # retried, and failed again: a failed item is not counted as embedded
    assert retried.plan["retried"] == 1 and retried.embedded_keys == [] and retried.counts.failed == 1
    Image.fromarray(_photo("camera")).save(corpus / "broken.jpg", format="JPEG")
    fixed = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert fixed.embedded_keys == [key(corpus, "broken.jpg")] and fixed.counts.failed == 0
    assert point_id(key(corpus, "broken.jpg")) in stored_points(settings)


def test_touched_file_is_not_embedded(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    target = corpus / "space" / "rocket.jpg"
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 5_000_000_000))
    spy = CountingEmbedder(tiny_embedder)
    touched = run(settings, corpus, spy)
    assert spy.images == 0 and touched.plan["unchanged"] == 6 and touched.counts.reused == 1
    settled = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert settled.counts.shards_written == 0


def test_dry_run_changes_nothing(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    (corpus / "short.txt").unlink()
    Image.fromarray(_photo("camera")).save(corpus / "new.png")
    shards_before = sorted((settings.root / "shards").rglob("[0-9]*.parquet"))
    state_before = (settings.root / "state.json").read_text()
    spy = CountingEmbedder(tiny_embedder)
    plan = run(settings, corpus, spy, dry_run=True)
    assert plan.plan["new"] == 1 and plan.plan["deleted"] == 1 and plan.plan["unchanged"] == 5
    assert spy.images == 0 and spy.texts == []
    assert sorted((settings.root / "shards").rglob("[0-9]*.parquet")) == shards_before
    assert (settings.root / "state.json").read_text() == state_before


def test_rebuild_gives_the_same_results_without_a_model(settings: Settings, corpus: Path, tiny_embedder, monkeypatch) -> None:
    from mmindex.pipeline.manage.maintenance import rebuild_collection

    run(settings, corpus, CountingEmbedder(tiny_embedder))
    queries = [SearchQuery("c", text="a cat", limit=10), SearchQuery("c", image=corpus / "coffee.webp", limit=10),
               SearchQuery("c", text="space", where=("modality=text",), limit=5)]
    before = [[(hit.key, round(hit.score, 5)) for hit in search(q, settings, tiny_embedder)] for q in queries]

    def no_model(*args, **kwargs):
        raise AssertionError("rebuild must not load a model")

    monkeypatch.setattr("mmindex.pipeline.embed.model.load_embedder", no_model)
    assert rebuild_collection(settings, "c").points == len(stored_points(settings))
    after = [[(hit.key, round(hit.score, 5)) for hit in search(q, settings, tiny_embedder)] for q in queries]
    assert after == before


def test_second_ingest_is_refused_while_one_runs(settings: Settings, corpus: Path, tiny_embedder) -> None:
    import subprocess
    import sys

    from mmindex.pipeline.errors import IndexBusyError
    from mmindex.pipeline.ingest.run import ingest_lock

    lock_path = ingest_lock(settings, "c").lock_file
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import filelock,sys; l=filelock.FileLock({lock_path!r}); l.acquire(); print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError, match="another ingest into collection 'c' is running"):
            run(settings, corpus, CountingEmbedder(tiny_embedder))
    finally:
        holder.communicate(input="", timeout=30)
    assert run(settings, corpus, CountingEmbedder(tiny_embedder)).counts.failed == 0


def test_info_reports_last_run(settings: Settings, corpus: Path, tiny_embedder) -> None:
    from mmindex.pipeline.manage.info import collection_infos

    run(settings, corpus, CountingEmbedder(tiny_embedder))
    (corpus / "short.txt").unlink()
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    info = collection_infos(settings, "c")[0]
    assert info.last_run is not None
    assert (info.last_run.deleted, info.last_run.unchanged, info.last_run.embedded) == (1, 5, 0)
    assert json.loads(json.dumps(info.as_json()))["last_run"]["deleted"] == 1


def test_materialized_catalog_is_rebuilt_when_lost_or_corrupt(settings: Settings, corpus: Path, tiny_embedder) -> None:
    run(settings, corpus, CountingEmbedder(tiny_embedder))
    (catalog_file,) = (settings.root / "catalog").rglob("*.parquet")
    catalog_file.write_bytes(b"garbage")
    (corpus / "short.txt").unlink()
    report = run(settings, corpus, CountingEmbedder(tiny_embedder))
    assert (report.plan["deleted"], report.plan["unchanged"]) == (1, 5)
    catalog_file.unlink()
    assert run(settings, corpus, CountingEmbedder(tiny_embedder)).plan["unchanged"] == 5
    assert_exact_points(settings, corpus, tiny_embedder)


def test_catalog_streamed_and_brought_forward_equals_a_full_rebuild(settings: Settings, corpus: Path, tiny_embedder) -> None:
    """The catalog written shard by shard (newest first), and the one brought forward from an
    older catalog, hold exactly what grouping every row of every shard gives."""
    from mmindex.pipeline.io.catalog import ITEM_COLUMNS, current_items, items_from_rows, latest_rows, load_catalog
    from mmindex.pipeline.io.paths import IndexPaths

    run(settings, corpus, tiny_embedder)
    version = collection_state(settings, "c").current
    log_ = IndexPaths(settings.root).shard_log("c", version.physical_name)
    first_catalog = load_catalog(log_).items
    first_through = log_.shards()[-1].seq
    (corpus / "space" / "astronaut.png").unlink()  # deleted
    shutil.move(corpus / "space" / "rocket.jpg", corpus / "rocket.jpg")  # renamed
    (corpus / "notes.md").write_text(LONG_NOTE.replace("cats sleep", "dogs bark"), encoding="utf-8")  # edited chunks
    Image.fromarray(_photo("camera")).convert("RGB").save(corpus / "camera.jpg")  # new
    run(settings, corpus, tiny_embedder)
    assert log_.shards()[-1].seq > first_through

    def rows(table) -> list[dict]:
        return sorted(table.to_pylist(), key=lambda row: row["item_key"])

    expected = rows(items_from_rows(latest_rows(log_, ITEM_COLUMNS)))
    assert rows(current_items(log_)) == expected
    assert rows(current_items(log_, first_catalog, first_through)) == expected
    assert rows(load_catalog(log_).items) == expected  # the catalog file written at the end of the run
    statuses = {row["item_key"].rsplit("/", 1)[-1]: row["status"] for row in expected}
    assert statuses["astronaut.png"] == "deleted" and statuses["camera.jpg"] == "ok"
