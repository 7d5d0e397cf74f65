"""Fail-fast order through the real CLI: the source and every flag are checked before any model
loads or anything is written under the root; a run that planned keeps what it did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import assert_one_line_error, run_cli

from mmindex.pipeline.embed import model as model_module


@pytest.fixture
def no_model_load(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records (and refuses) every attempt to load a CLIP model."""
    calls: list[Any] = []

    def refuse(*args: Any, **kwargs: Any) -> None:
        calls.append(args)
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(model_module, "load_embedder", refuse)
    return calls


def _root_contents(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*")) if root.exists() else []


def test_missing_source_is_reported_before_the_weights_and_leaves_nothing(
    tmp_path: Path, no_model_load: list[Any]
) -> None:
    root = tmp_path / "root"
    result = run_cli("index", str(tmp_path / "nope"), "-c", "newcoll", "--root", str(root),
                     env={"HF_HUB_OFFLINE": "1"})  # the default weights are not downloaded either
    assert_one_line_error(result, "source directory not found", code=2)
    assert "weights" not in result.stderr
    assert no_model_load == [] and _root_contents(root) == []


def test_missing_source_with_a_local_model_loads_nothing(
    tmp_path: Path, tiny_local_dir: Path, no_model_load: list[Any]
) -> None:
    root = tmp_path / "root"
    result = run_cli("index", str(tmp_path / "nope"), "-c", "newcoll", "--root", str(root),
                     "--model", f"local-dir:{tiny_local_dir}")
    assert_one_line_error(result, "source directory not found", code=2)
    assert no_model_load == [] and _root_contents(root) == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "local-dir:/nonexistent/model"], "model folder not found"),
        (["--model", "ViT-B-32", "--pretrained", "no-such-tag"], "neither a checkpoint file nor a tag"),
        (["--precision", "fp8"], "'fp8' is not one of"),
        (["--device", "tpu"], "invalid device"),
        (["--labels", " , "], "label"),
        (["--chunk-context", "titles-please"], "unknown --chunk-context 'titles-please'"),
    ],
    ids=["model-folder", "weights-tag", "precision", "device", "labels", "chunk-context"],
)
def test_bad_flags_or_unobtainable_weights_create_no_collection(
    tmp_path: Path, photo_corpus: Path, no_model_load: list[Any], flags: list[str], message: str
) -> None:
    root = tmp_path / "root"
    result = run_cli("index", str(photo_corpus), "-c", "newcoll", "--root", str(root), *flags)
    assert_one_line_error(result, message)
    assert no_model_load == []
    assert _root_contents(root) == []  # no state entry, no store collection, no lock file
    code, stdout, _ = run_cli("info", "--root", str(root), "--json")
    assert code != 0 or json.loads(stdout)["collections"] == []


def test_a_run_whose_items_all_failed_keeps_its_collection_and_failed_rows(
    tmp_path: Path, tiny_local_dir: Path
) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "broken.jpg").write_bytes(b"not a jpeg at all")
    (corpus / "empty.png").write_bytes(b"")
    root = tmp_path / "root"
    code, stdout, stderr = run_cli("index", str(corpus), "-c", "allbad", "--root", str(root),
                                   "--model", f"local-dir:{tiny_local_dir}", "--workers", "0", "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["failed"] == 2
    code, stdout, stderr = run_cli("info", "-c", "allbad", "--root", str(root), "--failed", "--json")
    assert code == 0, stderr
    info = json.loads(stdout)
    assert "broken.jpg" in stdout and "empty.png" in stdout, info


def test_query_image_errors_come_before_the_model(
    tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "root"
    code, _, stderr = run_cli("index", str(photo_corpus), "-c", "photos", "--root", str(root),
                              "--model", f"local-dir:{tiny_local_dir}", "--workers", "0")
    assert code == 0, stderr
    loads: list[Any] = []
    monkeypatch.setattr(model_module, "load_embedder", lambda *args, **kwargs: loads.append(args))

    missing = run_cli("query", "--image", str(tmp_path / "missing.jpg"), "-c", "photos", "--root", str(root))
    assert_one_line_error(missing, "cannot read query image", code=2)
    assert "missing.jpg" in missing.stderr

    notes = photo_corpus / "notes" / "rockets.txt"
    not_image = run_cli("query", "--image", str(notes), "-c", "photos", "--root", str(root))
    assert_one_line_error(not_image, "not an image", code=2)
    assert "rockets.txt" in not_image.stderr
    assert loads == []


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--format", "zip"], "--format must be one of"), (["--labels", " , "], "label"),
     (["--precision", "fp8"], "'fp8' is not one of"),
     (["--qdrant-url", "http://admin:s3cret@127.0.0.1:6333"], "carries credentials")],
    ids=["format", "labels", "precision", "qdrant-key"],
)
def test_schedule_checks_every_option_before_prefect(
    tmp_path: Path, photo_corpus: Path, monkeypatch: pytest.MonkeyPatch, flags: list[str], message: str
) -> None:
    """A bad option of a schedule is refused at once, before any Prefect server is asked for."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = run_cli("schedule", str(photo_corpus), "-c", "sched", "--root", str(tmp_path / "root"),
                     "--interval", "60", *flags)
    assert_one_line_error(result, message, code=2)
    assert "PREFECT_API_URL" not in result.stderr and "s3cret" not in result.stderr
