"""The run session and the run record: one run reads the state a fixed number of times, and
``state.json`` files written by the previous version still load (and serve queries)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import mmindex.pipeline.io.state_file as state_file
from mmindex.pipeline.collection import Collection, collection_state
from mmindex.pipeline.errors import ModelMismatchError
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.io.state_file import edit_state, read_state
from mmindex.schemas.config import Settings
from mmindex.schemas.state import RunCounts, RunSummary

# A state.json as the version before the run-session refactor wrote it (flat last_run without
# chunks_reused/failed_unchanged, scoring as a plain string).
OLD_STATE = """{
  "format": 1,
  "collections": {
    "photos": {
      "name": "photos",
      "current": {
        "physical_name": "photos--0123456789",
        "embedder_id": "ViT-B-32|laion2b_s34b_b79k|pp1",
        "model": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",
        "dim": 512,
        "created_at": "2025-01-02T03:04:05Z",
        "applied_through": 7,
        "text_model": null,
        "text_embedder_id": null,
        "text_dim": null,
        "sparse_encoder_id": null
      },
      "building": null,
      "previous": [],
      "sources": {"/data/photos": {"path": "/data/photos", "include": [], "exclude": ["*.tmp"], "include_hidden": false}},
      "labels": {"labels": ["cat", "dog"], "templates": ["a photo of a {}."], "threshold": null, "scoring": "cosine"},
      "last_run": {
        "started_at": "2025-01-02T03:04:05Z",
        "seconds": 12.5,
        "items_seen": 120,
        "new": 3,
        "changed": 1,
        "renamed": 0,
        "deleted": 2,
        "unchanged": 114,
        "retried": 0,
        "embedded": 4,
        "reused": 0,
        "images": 4,
        "text_chunks": 0,
        "failed": 0,
        "points_upserted": 4,
        "points_deleted": 2,
        "shards_written": 1,
        "dry_run": false
      }
    }
  }
}
"""


def _settings(root: Path, model_dir: Path) -> Settings:
    return Settings(root=root, model=f"local-dir:{model_dir}", pretrained=None, workers=0, batch_size=4, shard_size=2)


def _count_read_state(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count calls of ``read_state`` from every mmindex module that imported it."""
    calls = [0]
    real: Callable[..., Any] = state_file.read_state

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return real(*args, **kwargs)

    for name, module in list(sys.modules.items()):
        if name.startswith("mmindex.") and getattr(module, "read_state", None) is real:
            monkeypatch.setattr(module, "read_state", counting)
    return calls


@pytest.mark.parametrize("fresh", [True, False], ids=["new-collection", "re-run"])
def test_one_run_reads_the_state_three_times(fresh: bool, photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The preflight reads it once, planning once, the run session once, whatever the number of units."""
    settings = _settings(tmp_path / "root", tiny_local_dir)
    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    if not fresh:
        index_source(IndexRequest(corpus, "c"), settings)
        images = sorted(p for p in corpus.rglob("*") if p.is_file() and p.suffix not in {".txt", ".json"})
        for path in images[:3]:  # three images change: two units
            path.write_bytes(path.read_bytes() + b"\0")
    calls = _count_read_state(monkeypatch)
    report = index_source(IndexRequest(corpus, "c"), settings)
    assert report.counts.shards_written >= 2  # several units, still three reads
    assert calls[0] == 3


def test_the_run_record_is_the_run_counts(photo_corpus: Path, tiny_local_dir: Path, tmp_path: Path) -> None:
    settings = _settings(tmp_path / "root", tiny_local_dir)
    report = index_source(IndexRequest(photo_corpus, "c"), settings)
    record = collection_state(settings, "c").last_run
    assert record is not None
    assert RunCounts.model_validate(record.model_dump(include=set(RunCounts.model_fields))) == report.counts
    assert report.counts.embedded == len(report.embedded_keys) == report.counts.new > 0


def test_a_state_file_of_the_previous_version_loads(tmp_path: Path, tiny_embedder: Any) -> None:
    (tmp_path / "state.json").write_text(OLD_STATE, encoding="utf-8")
    state = read_state(tmp_path)
    entry = state.collections["photos"]
    assert entry.current.applied_through == 7 and entry.sources["/data/photos"].exclude == ["*.tmp"]
    assert entry.labels is not None and entry.labels.scoring == "cosine"
    last = entry.last_run
    assert isinstance(last, RunSummary) and last.seconds == 12.5
    assert (last.items_seen, last.new, last.deleted, last.unchanged, last.embedded, last.points_deleted) == (120, 3, 2, 114, 4, 2)
    assert last.chunks_reused == last.failed_unchanged == 0  # counts the old file did not have
    assert last.plan() == {"new": 3, "changed": 1, "renamed": 0, "deleted": 2, "unchanged": 114, "retried": 0,
                           "failed_unchanged": 0}
    with edit_state(tmp_path) as edited:  # written back in the current format, read again unchanged
        edited.collections["photos"].current.applied_through = 8
    again = read_state(tmp_path).collections["photos"]
    assert again.last_run == last and again.current.applied_through == 8
    # The collection opens; another model than its own is refused with the one error.
    collection = Collection.open(Settings(root=tmp_path), "photos", embedder=tiny_embedder)
    with pytest.raises(ModelMismatchError, match="photos--0123456789"):
        collection.embedder()
