"""End to end through the CLI on both store backends: index a real corpus, query it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmindex.pipeline.cli import app

IMAGES = ["people/astronaut.jpg", "animals/cat.png", "food/coffee.webp", "people/camera.tif", "rocket.bmp", "space/hubble.jpg"]


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(params=["edge", "qdrant-client"])
def backend_flags(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    if request.param == "edge":
        return []
    return ["--qdrant-url", f"local:{tmp_path / 'qdrant-client'}"]


@pytest.fixture
def indexed(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, backend_flags: list[str]) -> dict[str, object]:
    root = tmp_path / "root"
    code, stdout, stderr = run(
        "index", str(photo_corpus), "--collection", "photos", "--root", str(root),
        "--model", f"local-dir:{tiny_local_dir}", "--workers", "0", "--json", *backend_flags,
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    return {"root": root, "report": report, "flags": ["--root", str(root), *backend_flags], "corpus": photo_corpus}


def query_json(indexed: dict[str, object], *args: str) -> list[dict[str, object]]:
    code, stdout, stderr = run("query", "--collection", "photos", *args, *indexed["flags"], "--json")  # type: ignore[misc]
    assert code == 0, stderr
    return json.loads(stdout)


def test_index_report_counts_every_item(indexed: dict[str, object]) -> None:
    report = indexed["report"]
    assert report["images"] == len(IMAGES)
    assert report["failed"] == 0
    assert report["text_chunks"] >= 3  # cats.md spans several chunks, rockets.txt one
    assert report["points_upserted"] == report["images"] + report["text_chunks"]


@pytest.mark.parametrize("relative", IMAGES)
def test_each_image_finds_itself_first(indexed: dict[str, object], relative: str) -> None:
    corpus: Path = indexed["corpus"]  # type: ignore[assignment]
    hits = query_json(indexed, "--image", str(corpus / relative), "--where", "modality=image", "--limit", "3")
    assert hits[0]["key"] == f"{corpus.resolve().as_posix()}/{relative}"
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert all(hit["payload"]["modality"] == "image" for hit in hits)


def test_text_query_returns_scored_hits_with_payload(indexed: dict[str, object]) -> None:
    hits = query_json(indexed, "a rocket in space", "--limit", "5")
    assert len(hits) == 5
    scores = [hit["score"] for hit in hits]
    assert scores == sorted(scores, reverse=True)
    assert {"key", "score", "payload"} <= set(hits[0])


def test_filters(indexed: dict[str, object]) -> None:
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


def test_indexing_twice_never_duplicates_points(indexed: dict[str, object], tiny_local_dir: Path) -> None:
    before = json.loads(run("info", "--json", *indexed["flags"])[1])["collections"][0]["points"]  # type: ignore[misc]
    code, _, stderr = run("index", str(indexed["corpus"]), "-c", "photos", "--workers", "0", *indexed["flags"])  # type: ignore[misc]
    assert code == 0, stderr
    after = json.loads(run("info", "--json", *indexed["flags"])[1])["collections"][0]  # type: ignore[misc]
    assert after["points"] == before == indexed["report"]["points_upserted"]  # type: ignore[index]
    assert after["embedder_id"].startswith("local-dir@sha256:")
    assert after["failed"] == 0


def test_info_lists_collection(indexed: dict[str, object]) -> None:
    code, stdout, _ = run("info", *indexed["flags"])  # type: ignore[misc]
    assert code == 0
    assert "photos" in stdout and "points=" in stdout


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
def test_user_errors_are_one_line(indexed: dict[str, object], args: list[str], message: str) -> None:
    code, stdout, stderr = run(*args, *indexed["flags"])  # type: ignore[misc]
    assert code != 0
    assert message in stderr
    assert "Traceback" not in stderr + stdout
    assert len(stderr.strip().splitlines()) == 1


def test_another_model_builds_a_new_version_and_switches(
    indexed: dict[str, object], tiny_checkpoint: Path, tiny_model_config: str
) -> None:
    """Indexing with other weights is a migration: a new version is built, then the name switches."""
    import torch

    other = tiny_checkpoint.parent / "other-weights.pt"
    state = torch.load(tiny_checkpoint)
    state["logit_scale"] = state["logit_scale"] + 1.0
    torch.save(state, other)
    before = json.loads(run("info", "--json", *indexed["flags"])[1])["collections"][0]  # type: ignore[misc]
    code, stdout, stderr = run(
        "index", str(indexed["corpus"]), "-c", "photos", "--model", tiny_model_config, "--pretrained", str(other),
        "--workers", "0", "--json", *indexed["flags"],  # type: ignore[misc]
    )
    assert code == 0, stderr
    report = json.loads(stdout)
    assert report["migrated_to"] and report["migrated_to"] != before["physical_name"]
    after = json.loads(run("info", "--json", *indexed["flags"])[1])["collections"][0]  # type: ignore[misc]
    assert after["physical_name"] == report["migrated_to"]
    assert after["points"] == before["points"]
    listed = json.loads(run("versions", "-c", "photos", "--json", *indexed["flags"])[1])  # type: ignore[misc]
    assert [entry["role"] for entry in listed] == ["current", "previous"]
    assert listed[1]["physical_name"] == before["physical_name"] and listed[1]["points"] == before["points"]
