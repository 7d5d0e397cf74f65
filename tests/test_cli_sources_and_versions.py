"""A collection fed from two folders, through the CLI on both store backends: indexing folder B
keeps folder A's points, a model migration re-embeds both sources, and ``versions --drop``
removes an old version's points and shards (and refuses the current or an unknown version)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import BACKENDS, CliResult, assert_one_line_error, run_cli

from mmindex.pipeline.store.open_store import open_store
from mmindex.schemas.config import Settings

FOLDER_A = ["people/astronaut.jpg", "animals/cat.png", "animals/cat.txt", "notes/rockets.txt"]
FOLDER_B = ["rocket.bmp", "food/coffee.webp", "space/hubble.jpg"]


@dataclass(frozen=True)
class TwoSources:
    """Folders A and B, and the flags of an index root on one backend."""

    a: Path
    b: Path
    flags: list[str]
    root: Path
    qdrant_url: str | None

    def cli(self, *args: str) -> CliResult:
        return run_cli(*args, *self.flags)

    def ok(self, *args: str) -> str:
        result = self.cli(*args)
        assert result.code == 0, result.stderr
        return result.stdout

    def keys(self) -> set[str]:
        """Every point key the collection answers with (a query over everything)."""
        hits = json.loads(self.ok("query", "x", "-c", "c", "--limit", "100", "--device", "cpu", "--json"))
        return {hit["key"] for hit in hits}

    def versions(self) -> list[dict[str, object]]:
        return json.loads(self.ok("versions", "-c", "c", "--json"))

    def settings(self) -> Settings:
        return Settings(root=self.root, qdrant_url=self.qdrant_url)


def _copy(corpus: Path, relatives: list[str], target: Path) -> Path:
    for relative in relatives:
        (target / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(corpus / relative, target / relative)
    return target


@pytest.fixture(params=BACKENDS)
def sources(request: pytest.FixtureRequest, tmp_path: Path, photo_corpus: Path) -> TwoSources:
    qdrant_url = f"local:{tmp_path / 'qdrant-client'}" if request.param == "qdrant-client" else None
    flags = ["--root", str(tmp_path / "root"), *(["--qdrant-url", qdrant_url] if qdrant_url else [])]
    return TwoSources(_copy(photo_corpus, FOLDER_A, tmp_path / "a"), _copy(photo_corpus, FOLDER_B, tmp_path / "b"),
                      flags, tmp_path / "root", qdrant_url)


def _key(folder: Path, relative: str) -> str:
    return f"{folder.resolve().as_posix()}/{relative}"


def _expected_keys(sources: TwoSources) -> set[str]:
    # cat.txt is the caption of cat.png (not an item); rockets.txt is one chunk.
    return {_key(sources.a, "people/astronaut.jpg"), _key(sources.a, "animals/cat.png"),
            _key(sources.a, "notes/rockets.txt") + "#chunk=0", *(_key(sources.b, relative) for relative in FOLDER_B)}


def _index_both(sources: TwoSources, tiny_local_dir: Path) -> None:
    model = ["--model", f"local-dir:{tiny_local_dir}", "--workers", "0"]
    sources.ok("index", str(sources.a), "-c", "c", *model)
    sources.ok("index", str(sources.b), "-c", "c", *model)


def _other_weights(tiny_checkpoint: Path, tmp_path: Path) -> Path:
    import torch

    state = torch.load(tiny_checkpoint)
    state["visual.proj"] = state["visual.proj"].flip(0)
    path = tmp_path / "other.pt"
    torch.save(state, path)
    return path


def test_indexing_folder_b_keeps_folder_a(sources: TwoSources, tiny_local_dir: Path) -> None:
    _index_both(sources, tiny_local_dir)
    assert sources.keys() == _expected_keys(sources)
    report = json.loads(sources.ok("index", str(sources.a), "-c", "c", "--json"))  # A again: B stays
    assert (report["plan"]["deleted"], report["points_deleted"]) == (0, 0)
    assert sources.keys() == _expected_keys(sources)
    (sources.a / "people" / "astronaut.jpg").unlink()  # a deleted file only removes its own point
    report = json.loads(sources.ok("index", str(sources.a), "-c", "c", "--json"))
    assert (report["plan"]["deleted"], report["points_deleted"]) == (1, 1)
    assert sources.keys() == _expected_keys(sources) - {_key(sources.a, "people/astronaut.jpg")}
    assert json.loads(sources.ok("info", "-c", "c", "--json"))["collections"][0]["points"] == len(_expected_keys(sources)) - 1


@pytest.mark.parametrize("via", ["migrate", "index"])
def test_a_migration_re_embeds_both_sources(
    sources: TwoSources, via: str, tiny_local_dir: Path, tiny_checkpoint: Path, tiny_model_config: str, tmp_path: Path
) -> None:
    _index_both(sources, tiny_local_dir)
    (old,) = sources.versions()
    new_model = ["--model", tiny_model_config, "--pretrained", str(_other_weights(tiny_checkpoint, tmp_path))]
    if via == "migrate":
        report = json.loads(sources.ok("migrate", "-c", "c", *new_model, "--device", "cpu", "--json"))
    else:  # indexing one source with another model migrates the whole collection
        report = json.loads(sources.ok("index", str(sources.b), "-c", "c", *new_model, "--workers", "0", "--json"))
    current, previous = sources.versions()
    assert report["migrated_to"] == current["physical_name"] != old["physical_name"]
    assert (current["role"], previous["role"], previous["physical_name"]) == ("current", "previous", old["physical_name"])
    assert current["embedder_id"] != old["embedder_id"]
    assert current["points"] == previous["points"] == len(_expected_keys(sources))
    hits = json.loads(sources.ok("query", "x", "-c", "c", "--limit", "100", "--device", "cpu", "--json"))
    assert {hit["key"] for hit in hits} == _expected_keys(sources)
    assert {hit["payload"]["embedder"] for hit in hits} == {current["embedder_id"]}


def test_versions_drop(sources: TwoSources, tiny_local_dir: Path, tiny_checkpoint: Path, tiny_model_config: str, tmp_path: Path) -> None:
    _index_both(sources, tiny_local_dir)
    new_model = ["--model", tiny_model_config, "--pretrained", str(_other_weights(tiny_checkpoint, tmp_path))]
    sources.ok("migrate", "-c", "c", *new_model, "--device", "cpu")
    current, previous = (entry["physical_name"] for entry in sources.versions())
    old_shards, old_catalog = sources.root / "shards" / "c" / str(previous), sources.root / "catalog" / "c" / f"{previous}.parquet"
    assert any(old_shards.glob("*.parquet")) and old_catalog.exists()

    assert_one_line_error(sources.cli("versions", "-c", "c", "--drop", str(current)), "is the current version", code=2)
    assert_one_line_error(sources.cli("versions", "-c", "c", "--drop", "c--nope"), "has no version 'c--nope'", code=2)
    assert [entry["physical_name"] for entry in sources.versions()] == [current, previous]  # the errors changed nothing

    dropped = sources.cli("versions", "-c", "c", "--drop", str(previous))
    assert dropped.code == 0 and f"dropped {previous}" in dropped.stderr, dropped.stderr
    assert [(entry["role"], entry["physical_name"]) for entry in sources.versions()] == [("current", current)]
    assert not old_shards.exists()
    assert not old_catalog.exists()
    assert not (sources.root / "catalog" / "c" / f"{previous}.shards").exists()  # its shards' integrity records
    store = open_store(sources.settings())
    try:
        assert not store.collection_exists(str(previous))
        assert store.count(str(current)) == len(_expected_keys(sources))
    finally:
        store.close()
    assert sources.keys() == _expected_keys(sources)  # the current version still answers
    assert_one_line_error(sources.cli("versions", "-c", "c", "--drop", str(previous)), f"has no version '{previous}'", code=2)
