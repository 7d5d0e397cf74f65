"""#22.8: an index root holds text from private folders, so it is created for its owner only
(0700) and the files mmindex publishes in it are 0600, whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.schemas.config import Settings


def test_a_new_root_is_private(tmp_path: Path, tiny_embedder: object) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "note.txt").write_text("private notes about the garden", encoding="utf-8")
    root = tmp_path / "index" / "root"
    previous = os.umask(0o022)
    try:
        index_source(IndexRequest(corpus, "c"), Settings(root=root, workers=0), embedder=tiny_embedder)  # type: ignore[arg-type]
    finally:
        os.umask(previous)
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    # What mmindex publishes (qdrant-edge writes its own files, under the private root).
    published = [path for path in root.rglob("*") if path.is_file() and path.suffix in (".json", ".parquet")
                 and path.relative_to(root).parts[0] != "qdrant"]
    assert any(path.name == "state.json" for path in published)
    assert any(path.suffix == ".parquet" for path in published)
    assert {oct(stat.S_IMODE(path.stat().st_mode)) for path in published} == {oct(0o600)}
