"""End to end through the CLI on both store backends: index a real corpus, query it back.

The corpus is indexed once per backend for the module (the ``indexed`` fixture of conftest.py);
tests that change a collection build their own."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import BACKENDS, Indexed, assert_one_line_error, index_corpus, run_cli

IMAGES = ["people/astronaut.jpg", "animals/cat.png", "food/coffee.webp", "people/camera.tif", "rocket.bmp", "space/hubble.jpg"]


def query_json(indexed: Indexed, *args: str) -> list[dict[str, object]]:
    code, stdout, stderr = run_cli("query", "--collection", "photos", *args, *indexed.flags, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def info_json(indexed: Indexed) -> dict[str, object]:
    code, stdout, stderr = run_cli("info", "--json", *indexed.flags)
    assert code == 0, stderr
    return json.loads(stdout)["collections"][0]


def test_index_report_counts_every_item(indexed: Indexed) -> None:
    report = indexed.report
    assert report["images"] == len(IMAGES)
    assert report["failed"] == 0
    assert report["text_chunks"] >= 3  # cats.md spans several chunks, rockets.txt one
    assert report["points_upserted"] == report["images"] + report["text_chunks"]


@pytest.mark.parametrize("relative", IMAGES)
def test_each_image_finds_itself_first(indexed: Indexed, relative: str) -> None:
    corpus = indexed.corpus
    hits = query_json(indexed, "--image", str(corpus / relative), "--where", "modality=image", "--limit", "3")
    assert hits[0]["key"] == f"{corpus.resolve().as_posix()}/{relative}"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(hit["payload"]["modality"] == "image" for hit in hits)


def test_text_query_returns_scored_hits_with_payload(indexed: Indexed) -> None:
    hits = query_json(indexed, "a rocket in space", "--limit", "5")
    assert len(hits) == 5
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert {"key", "score", "payload"} <= set(hits[0])


def test_filters(indexed: Indexed) -> None:
    texts = query_json(indexed, "cats", "--where", "modality=text", "--limit", "50")
    assert texts and all(hit["payload"]["modality"] == "text" and hit["payload"]["text"] for hit in texts)
    pngs_or_bmps = query_json(indexed, "x", "--where", "ext=png,bmp", "--limit", "50")
    assert sorted(hit["payload"]["ext"] for hit in pngs_or_bmps) == ["bmp", "png"]
    not_images = query_json(indexed, "x", "--where", "modality!=image", "--limit", "50")
    assert len(not_images) == len(texts)
    wide = query_json(indexed, "x", "--where", "width>=512", "--where", "modality=image", "--limit", "50")
    assert sorted(hit["payload"]["path"] for hit in wide) == [
        "food/coffee.webp", "people/astronaut.jpg", "people/camera.tif", "rocket.bmp",
    ]
    narrow = query_json(indexed, "x", "--where", "width<512", "--limit", "50")
    assert sorted(hit["payload"]["path"] for hit in narrow) == ["animals/cat.png", "space/hubble.jpg"]
    exact = query_json(indexed, "x", "--where", "width>600", "--where", "height<=427", "--limit", "50")
    assert [hit["payload"]["path"] for hit in exact] == ["rocket.bmp"]
    sidecar = query_json(indexed, "x", "--where", "meta.year=2009", "--limit", "50")
    assert [hit["payload"]["path"] for hit in sidecar] == ["animals/cat.png"]
    assert sidecar[0]["payload"]["caption"] == "Chelsea the cat, sitting on a rug"
    assert sidecar[0]["payload"]["meta"] == {"year": 2009, "camera": "unknown"}


def test_indexing_twice_never_duplicates_points(indexed: Indexed) -> None:
    before = info_json(indexed)["points"]
    code, _, stderr = run_cli("index", str(indexed.corpus), "-c", "photos", "--workers", "0", *indexed.flags)
    assert code == 0, stderr
    after = info_json(indexed)
    assert after["points"] == before == indexed.report["points_upserted"]
    assert after["embedder_id"].startswith("local-dir@sha256:")
    assert after["failed"] == 0


def test_info_lists_collection(indexed: Indexed) -> None:
    code, stdout, _ = run_cli("info", *indexed.flags)
    assert code == 0
    assert "photos" in stdout and "points=" in stdout
    assert info_json(indexed)["pretrained"] is None  # a local-dir model: its folder, not a tag, holds the weights


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "x", "-c", "nope"], "no collection 'nope'"),
        (["query", "x", "-c", "photos", "--where", "width>>3"], "--where 'width>>3'"),
        (["query", "x", "-c", "photos", "--where", "path>3"], "text field"),
        (["query", "-c", "photos"], "give a query text"),
        (["query", "--image", "/does/not/exist.jpg", "-c", "photos"], "cannot read query image"),
        (["info", "-c", "nope"], "no collection 'nope'"),
        (["index", "/does/not/exist", "-c", "photos"], "/does/not/exist"),
    ],
)
def test_user_errors_are_one_line(indexed: Indexed, args: list[str], message: str) -> None:
    assert_one_line_error(run_cli(*args, *indexed.flags), message)


@pytest.mark.parametrize("backend", BACKENDS)
def test_another_model_builds_a_new_version_and_switches(
    backend: str, tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, tiny_checkpoint: Path, tiny_model_config: str
) -> None:
    """Indexing with other weights is a migration: a new version is built, then the name switches."""
    import torch

    indexed = index_corpus(backend, tmp_path, photo_corpus, tiny_local_dir)  # its own: this test migrates it

    other = tiny_checkpoint.parent / "other-weights.pt"
    state = torch.load(tiny_checkpoint)
    state["logit_scale"] = state["logit_scale"] + 1.0
    torch.save(state, other)
    before = info_json(indexed)
    code, stdout, stderr = run_cli(
        "index", str(indexed.corpus), "-c", "photos", "--model", tiny_model_config, "--pretrained", str(other),
        "--workers", "0", "--json", *indexed.flags,
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["migrated_to"] and report["migrated_to"] != before["physical_name"]
    after = info_json(indexed)
    assert after["physical_name"] == report["migrated_to"]
    assert after["points"] == before["points"]
    listed = json.loads(run_cli("versions", "-c", "photos", "--json", *indexed.flags).stdout)
    assert [entry["role"] for entry in listed] == ["current", "previous"]
    assert listed[1]["physical_name"] == before["physical_name"] and listed[1]["points"] == before["points"]


def test_shard_size_flag_sets_the_unit_of_work(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> None:
    """`--shard-size 3` over the 8-item corpus makes 3 shards (the default 1024 would make one)."""
    code, stdout, stderr = run_cli(
        "index", str(photo_corpus), "-c", "sharded", "--root", str(tmp_path / "root"), "--model",
        f"local-dir:{tiny_local_dir}", "--workers", "0", "--shard-size", "3", "--json",
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["shards"] == 3 and report["images"] == 6


def test_a_missing_source_creates_nothing_in_the_root(tmp_path: Path, tiny_local_dir: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    result = run_cli("index", str(tmp_path / "missing"), "-c", "c", "--root", str(root), "--model",
                     f"local-dir:{tiny_local_dir}")
    assert_one_line_error(result, "source directory not found")
    assert list(root.iterdir()) == []
