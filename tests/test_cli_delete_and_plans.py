"""``mmindex delete`` (a whole collection, or one source's items), ``--dry-run`` item lists,
``mmindex models`` for unknown names, ``score_kind`` in ``--json``, and ``rebuild`` keeping labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import run_cli

from mmindex.pipeline.io.state_file import read_state
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings


def points(root: Path, collection: str, where: list[str] | None = None) -> int:
    settings = Settings(root=root)
    name = read_state(root).collections[collection].current.physical_name
    store = open_store(settings)
    try:
        return store.count(name, parse_where(where) if where else None)
    finally:
        store.close()


def physical_names(root: Path, collection: str) -> list[str]:
    entry = read_state(root).collections[collection]
    return [entry.current.physical_name, *(version.physical_name for version in entry.previous)]


@pytest.fixture
def two_collections(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> dict[str, object]:
    """Collection ``a`` from two sources (photos, and a folder of notes), collection ``b`` from the photos."""
    root = tmp_path / "root"
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "one.txt").write_text("the first note about rockets\n", encoding="utf-8")
    (notes / "two.txt").write_text("the second note about cats\n", encoding="utf-8")
    model = ["--model", f"local-dir:{tiny_local_dir}", "--workers", "0", "--text-model", "none"]
    for source, collection in ((photo_corpus, "a"), (notes, "a"), (photo_corpus, "b")):
        code, _, stderr = run_cli("index", str(source), "-c", collection, "--root", str(root), *model)
        assert code == 0, stderr
    return {"root": root, "notes": notes, "photos": photo_corpus}


def test_delete_a_collection_removes_everything_of_it(two_collections: dict[str, object]) -> None:
    root: Path = two_collections["root"]  # type: ignore[assignment]
    names = physical_names(root, "a")
    before_b = points(root, "b")
    code, _, stderr = run_cli("delete", "-c", "a", "--root", str(root), stdin="n\n")
    assert code == 1 and "not deleted" in stderr and "a" in read_state(root).collections
    code, stdout, stderr = run_cli("delete", "-c", "a", "--root", str(root), "--yes", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["versions"] == names
    assert "a" not in read_state(root).collections
    assert not (root / "shards" / "a").exists() and not (root / "runs" / "a").exists()
    assert not (root / "catalog" / "a").exists() and (root / "catalog" / "b").is_dir()  # its catalogs and records too
    store = open_store(Settings(root=root))
    try:
        assert not any(store.collection_exists(name) for name in names)
    finally:
        store.close()
    assert points(root, "b") == before_b > 0  # the other collection is untouched
    code, _, stderr = run_cli("delete", "-c", "a", "--root", str(root), "--yes")
    assert code == 2 and "no collection 'a'" in stderr


def test_delete_one_source_leaves_the_others(two_collections: dict[str, object]) -> None:
    root: Path = two_collections["root"]  # type: ignore[assignment]
    notes: Path = two_collections["notes"]  # type: ignore[assignment]
    photos = points(root, "a", ["modality=image"])
    assert points(root, "a", ["modality=text"]) > 2  # the photo corpus' notes and the two notes
    code, _, stderr = run_cli("delete", "-c", "a", "--source", str(notes), "--root", str(root), "--yes")
    assert code == 0, stderr
    assert "deleted 2 items" in stderr
    assert points(root, "a", ["modality=image"]) == photos
    assert points(root, "a", ["path=one.txt"]) == 0 and points(root, "a", ["path=two.txt"]) == 0
    assert points(root, "a", ["path=notes/rockets.txt"]) == 1  # the photo corpus' own text stays
    state = read_state(root).collections["a"]
    assert notes.resolve().as_posix() not in state.sources and len(state.sources) == 1
    code, stdout, _ = run_cli("info", "-c", "a", "--failed", "--root", str(root))
    assert code == 0 and "one.txt" not in stdout
    # Indexing the notes again brings them back (the tombstones are history, not a block).
    code, _, stderr = run_cli("index", str(notes), "-c", "a", "--root", str(root), "--workers", "0")
    assert code == 0, stderr
    assert points(root, "a", ["path=one.txt"]) == 1
    code, _, stderr = run_cli("delete", "-c", "a", "--source", "/nowhere", "--root", str(root), "--yes")
    assert code == 2 and "has no source '/nowhere'" in stderr


def test_dry_run_lists_items_of_each_kind(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    flags = ["--root", str(tmp_path / "root"), "--model", f"local-dir:{tiny_local_dir}", "--workers", "0"]
    assert run_cli("index", str(corpus), "-c", "p", *flags)[0] == 0
    for number in range(12):
        (corpus / f"new-{number:02d}.txt").write_text(f"note number {number}\n", encoding="utf-8")
    (corpus / "rocket.bmp").rename(corpus / "rocket-renamed.bmp")
    (corpus / "notes" / "rockets.txt").write_text("changed text\n", encoding="utf-8")
    (corpus / "space" / "hubble.jpg").unlink()

    code, _, stderr = run_cli("index", str(corpus), "-c", "p", *flags, "--dry-run")
    assert code == 0, stderr
    new_lines = [line for line in stderr.splitlines() if line.strip().startswith("new ") and "new-" in line]
    assert len(new_lines) == 10 and "new-00.txt" in new_lines[0]
    assert "… and 2 more" in stderr
    assert "rocket.bmp -> rocket-renamed.bmp" in stderr
    assert "notes/rockets.txt" in stderr and "space/hubble.jpg" in stderr

    code, _, stderr = run_cli("index", str(corpus), "-c", "p", *flags, "--dry-run", "--list")
    assert code == 0 and "new-11.txt" in stderr and "more" not in stderr

    code, stdout, stderr = run_cli("index", str(corpus), "-c", "p", *flags, "--dry-run", "--json")
    assert code == 0, stderr
    items = json.loads(stdout)["planned_items"]
    assert len(items["new"]) == 12
    assert items["renamed"] == [{"from": "rocket.bmp", "to": "rocket-renamed.bmp"}]
    assert items["changed"] == ["notes/rockets.txt"] and items["deleted"] == ["space/hubble.jpg"]

    code, _, stderr = run_cli("index", str(corpus), "-c", "p", *flags, "--list")
    assert code == 2 and "--list goes with --dry-run" in stderr


def test_models_says_unknown_names_and_suggests() -> None:
    code, stdout, stderr = run_cli("models", "ViT-B-99")
    assert code == 2 and stdout == ""
    assert "unknown open_clip architecture 'ViT-B-99'" in stderr and "ViT-B-32" in stderr
    code, stdout, _ = run_cli("models", "ViT-B-32")
    assert code == 0 and "ViT-B-32\tlaion2b_s34b_b79k" in stdout


def test_score_kind_in_json(two_collections: dict[str, object]) -> None:
    root = str(two_collections["root"])
    code, stdout, stderr = run_cli("query", "rockets", "-c", "a", "--root", root, "--json")
    assert code == 0, stderr
    hits = json.loads(stdout)
    assert hits and {hit["score_kind"] for hit in hits} == {"cosine"}


def test_rebuild_keeps_labels(two_collections: dict[str, object]) -> None:
    root = str(two_collections["root"])
    code, _, stderr = run_cli("label", "-c", "b", "--labels", "cat,rocket,person", "--threshold", "0", "--root", root)
    assert code == 0, stderr
    labeled = points(Path(root), "b", ["labels=cat"]) + points(Path(root), "b", ["labels=rocket"])
    assert labeled > 0
    code, _, stderr = run_cli("rebuild", "-c", "b", "--root", root)
    assert code == 0, stderr
    assert "labeled 6 images again" in stderr
    after = points(Path(root), "b", ["labels=cat"]) + points(Path(root), "b", ["labels=rocket"])
    assert after == labeled
