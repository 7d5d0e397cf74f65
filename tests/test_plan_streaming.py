"""Planning streams (#15): the crawl is planned a batch at a time and each full work unit is
published at once, so a manifest of millions of rows is never held as ``ItemRef``s; a plan cut
into tiny batches decides exactly what one batch would (renames across batches included)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from helpers import CountingEmbedder
from PIL import Image

from mmindex.pipeline.ingest import plan as plan_module
from mmindex.pipeline.ingest.plan import plan_changes
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.ingest.units import RunDir, UnitWriter
from mmindex.pipeline.io.catalog import Catalog
from mmindex.pipeline.sources.base import UNKNOWN_SIZE, ItemRef
from mmindex.schemas.config import Settings

RUN_ID = "20260101T000000000000Z-0123abcd"


def _rows(count: int, pulled: list[int]) -> Iterator[ItemRef]:
    """Manifest-like refs, counting how many the consumer has pulled."""
    for n in range(count):
        pulled[0] += 1
        yield ItemRef(key=f"m/{n}", source_id="m", uri=f"https://example.org/{n}.jpg", path=str(n), ext="jpg",
                      modality="image", size=UNKNOWN_SIZE, mtime_ns=0, sidecar_sig=f"row:{n}")


def test_plan_parts_are_yielded_before_the_crawl_ends_and_units_published_as_they_fill(tmp_path: Path) -> None:
    pulled = [0]
    parts = plan_changes(_rows(25, pulled), Catalog.empty(), "m", batch_items=10)
    writer = UnitWriter(RunDir(tmp_path, "c", RUN_ID), first_seq=7, items_per_unit=4)
    first = next(parts)
    assert pulled[0] == 10 and len(first.embed_new) == 10  # one batch read, not the whole crawl
    writer.add(first)
    units = sorted((tmp_path / "runs" / "c" / RUN_ID / "units").iterdir())
    assert [path.name for path in units] == ["00000007.json", "00000008.json"]  # full units are on disk already
    rest = list(parts)
    for part in rest:
        writer.add(part)
    writer.end_source()
    assert pulled[0] == 25
    assert sum(part.counts().new for part in [first, *rest]) == 25
    assert (writer.seqs, writer.unit_items) == ([7, 8, 9, 10, 11, 12, 13], [4, 4, 4, 4, 4, 4, 1])
    embedded = [ref.key for seq in writer.seqs for ref in RunDir(tmp_path, "c", RUN_ID).read_unit(seq).embed]
    assert embedded == [f"m/{n}" for n in range(25)]


def test_edits_planned_in_batches_of_two_match_the_whole_plan(
    tmp_path: Path, tiny_embedder, monkeypatch
) -> None:
    from skimage import data

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for name in ("astronaut", "camera", "chelsea", "coffee", "rocket", "coins"):
        array = getattr(data, name)()
        Image.fromarray(array if array.ndim == 3 else np.stack([array] * 3, axis=-1)).save(corpus / f"{name}.png")
    settings = Settings(root=tmp_path / "root", workers=0, batch_size=8, shard_size=3)
    index_source(IndexRequest(corpus, "c"), settings, embedder=tiny_embedder)

    # Renamed (sorted first, so its new name is planned in the first batch, the old one vanishes
    # only once the whole crawl is seen), deleted, edited and new.
    shutil.move(corpus / "rocket.png", corpus / "a-rocket.png")
    (corpus / "coins.png").unlink()
    Image.fromarray(data.astronaut()[::2, ::2]).save(corpus / "chelsea.png")
    Image.fromarray(data.hubble_deep_field()[:64, :64]).save(corpus / "new.png")
    monkeypatch.setattr(plan_module, "PLAN_BATCH_ITEMS", 2)
    spy = CountingEmbedder(tiny_embedder)
    report = index_source(IndexRequest(corpus, "c"), settings, embedder=spy)
    assert report.plan == {"new": 1, "changed": 1, "renamed": 1, "deleted": 1, "unchanged": 3, "retried": 0,
                           "failed_unchanged": 0}
    assert spy.images == 2  # the edited and the new image; the renamed one reuses its vector
    again = index_source(IndexRequest(corpus, "c"), settings, embedder=spy)
    assert again.plan["unchanged"] == 6 and spy.images == 2
