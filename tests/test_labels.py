"""Zero-shot labels: `mmindex label` scores each image against prompt-ensembled label texts and
stores the labels that pass the threshold; expectations are computed here with NumPy from the
Parquet vectors, the tiny model's text embeddings and its logit scale."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import BACKENDS, COLLECTION, Indexed, collection_points, index_corpus, run_cli

from mmindex.pipeline.errors import ConfigError, SourceError
from mmindex.pipeline.search.labels import (
    LabelSpec,
    apply_labels,
    passing_labels,
    read_labels_file,
    score_images,
    split_labels,
)
from mmindex.pipeline.search.query import SearchQuery, search


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> Indexed:
    """A newly indexed corpus per test (labeling changes payloads)."""
    return index_corpus(request.param, tmp_path, photo_corpus, tiny_local_dir)


def expected_scores(
    indexed: Indexed, embedder: Any, labels: Sequence[str], templates: Sequence[str], scoring: str
) -> dict[str, np.ndarray]:
    """Per image key, its score for each label (NumPy, independent of pipeline.labels)."""
    label_vectors = []
    for label in labels:
        prompts = embedder.encode_texts([t.replace("{}", label) for t in templates]).astype(np.float64)
        mean = (prompts / np.linalg.norm(prompts, axis=1, keepdims=True)).mean(axis=0)
        label_vectors.append(mean / np.linalg.norm(mean))
    ref = indexed.reference
    images = [i for i, modality in enumerate(ref.modality) if modality == "image"]
    cosine = ref.vectors[images].astype(np.float64) @ np.stack(label_vectors).T
    if scoring == "softmax":
        logits = float(embedder.model.logit_scale.detach().exp()) * cosine
        cosine = np.exp(logits - logits.max(axis=1, keepdims=True))
        cosine /= cosine.sum(axis=1, keepdims=True)
    return {ref.keys[i]: cosine[row] for row, i in enumerate(images)}


def split_threshold(scores: dict[str, np.ndarray]) -> float:
    """A threshold between two distinct best scores, so some images get labels and some none."""
    best = sorted(float(row.max()) for row in scores.values())
    gaps = [(best[i + 1] - best[i], i) for i in range(1, len(best) - 2)]
    _, i = max(gaps)
    return (best[i] + best[i + 1]) / 2


def stored_payloads(indexed: Indexed) -> dict[str, dict[str, Any]]:
    """Every point's payload by key, read with the store's scroll."""
    return {point.payload["key"]: point.payload for point in collection_points(indexed.settings(), COLLECTION).values()}


def stored_images(indexed: Indexed) -> dict[str, dict[str, Any]]:
    return {key: payload for key, payload in stored_payloads(indexed).items() if payload["modality"] == "image"}


def keys_where(indexed: Indexed, embedder: Any, *where: str) -> list[str]:
    """Keys a query filtered by ``where`` returns (Python path; the model is passed in)."""
    query = SearchQuery(COLLECTION, text="x", where=where, limit=50)
    return sorted(hit.key for hit in search(query, indexed.settings(), embedder))


def check_stored(
    indexed: Indexed, embedder: Any, scores: dict[str, np.ndarray], labels: Sequence[str], threshold: float
) -> None:
    payloads = stored_payloads(indexed)
    images = {key: payload for key, payload in payloads.items() if payload["modality"] == "image"}
    assert set(images) == set(scores)
    for key, row in scores.items():
        order = [i for i in np.argsort(-row) if row[i] >= threshold]
        assert images[key]["labels"] == [labels[i] for i in order], key
        assert list(images[key]["label_scores"]) == [labels[i] for i in order]
        for i in order:
            assert images[key]["label_scores"][labels[i]] == pytest.approx(row[i], abs=1e-5)
    for label in labels:
        expected = sorted(k for k, row in scores.items() if row[labels.index(label)] >= threshold)
        assert keys_where(indexed, embedder, f"labels={label}") == expected
    assert all("labels" not in payload for payload in payloads.values() if payload["modality"] == "text")


def label_cli(indexed: Indexed, *args: str) -> dict[str, Any]:
    code, stdout, stderr = run_cli("label", "-c", COLLECTION, *args, *indexed.flags, "--device", "cpu", "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def test_label_stores_softmax_labels_above_threshold(fresh: Indexed, tiny_embedder: Any) -> None:
    labels = ["cat", "rocket", "coffee cup"]
    scores = expected_scores(fresh, tiny_embedder, labels, ["a photo of a {}."], "softmax")
    threshold = split_threshold(scores)
    report = label_cli(fresh, "--labels", "cat, rocket,coffee cup", "--threshold", f"{threshold:.8f}")
    cats = fresh.query("x", "--where", "labels=cat", "--limit", "50")  # the CLI filter, once
    assert sorted(h["key"] for h in cats) == sorted(k for k, row in scores.items() if row[0] >= threshold)
    passing = {k: [labels[i] for i in range(3) if row[i] >= threshold] for k, row in scores.items()}
    assert report["images"] == 6 and report["scoring"] == "softmax"
    assert report["labeled"] == sum(1 for found in passing.values() if found)
    assert 0 < report["labeled"] < 6
    assert report["counts"] == {label: sum(label in found for found in passing.values()) for label in labels}
    check_stored(fresh, tiny_embedder, scores, labels, threshold)


def test_labels_file_templates_cosine_and_any_language(fresh: Indexed, tiny_embedder: Any, tmp_path: Path) -> None:
    labels = ["chat noir", "猫", "ロケット", "café"]
    path = tmp_path / "labels.txt"
    path.write_text("# animals and things\nchat noir\n\n猫\n  ロケット  \ncafé\n猫\n", encoding="utf-8")
    templates = ["a photo of a {}.", "une photo de {}"]
    scores = expected_scores(fresh, tiny_embedder, labels, templates, "cosine")
    threshold = split_threshold(scores)
    report = label_cli(
        fresh, "--labels-file", str(path), "--template", templates[0], "--template", templates[1],
        "--scoring", "cosine", "--threshold", f"{threshold:.8f}",
    )
    assert set(report["counts"]) == set(labels) and report["scoring"] == "cosine"
    check_stored(fresh, tiny_embedder, scores, labels, threshold)


def test_relabeling_replaces_old_labels_and_only_keys_limits_the_run(fresh: Indexed, tiny_embedder: Any) -> None:
    label_cli(fresh, "--labels", "cat,dog", "--threshold", "0")
    assert all(payload["labels"] for payload in stored_images(fresh).values())
    cat, rocket = fresh.key("animals/cat.png"), fresh.key("rocket.bmp")
    report = apply_labels(fresh.settings(), COLLECTION, ["car"], threshold=0.9, only_keys=[cat, rocket], embedder=tiny_embedder)
    assert report.images == 2 and report.labeled == 2  # one label: softmax gives it 1.0
    payloads = stored_images(fresh)
    assert payloads[cat]["labels"] == payloads[rocket]["labels"] == ["car"]
    assert payloads[cat]["label_scores"] == {"car": pytest.approx(1.0)}
    others = [payload for key, payload in payloads.items() if key not in (cat, rocket)]
    assert all(set(payload["labels"]) <= {"cat", "dog"} and payload["labels"] for payload in others)
    assert keys_where(fresh, tiny_embedder, "labels=car") == sorted([cat, rocket])
    apply_labels(fresh.settings(), COLLECTION, ["cat", "dog"], threshold=1.0, embedder=tiny_embedder)  # softmax of two never reaches 1
    assert all(payload["labels"] == [] for payload in stored_images(fresh).values())
    assert keys_where(fresh, tiny_embedder, "labels=cat") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give either --labels"),
        (["--labels", "a", "--labels-file", "x.txt"], "give either --labels"),
        (["--labels", " , "], "at least one label"),
        (["--labels", "a", "--template", "a photo"], "has no '{}'"),
        (["--labels", "a", "--scoring", "max"], "'max' is not one of 'softmax', 'cosine'"),
        (["--labels-file", "/does/not/exist.txt"], "cannot read labels file"),
        (["--labels", "a", "--threshold", "2"], "between -1 and 1"),
    ],
)
def test_label_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    """Checked before the collection is looked up or the model loaded."""
    code, stdout, stderr = run_cli("label", "-c", COLLECTION, *args, "--root", str(tmp_path))
    assert code != 0, stdout
    assert message in stderr and "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_label_unknown_collection(tmp_path: Path) -> None:
    code, _, stderr = run_cli("label", "-c", "nope", "--labels", "a", "--root", str(tmp_path))
    assert code != 0 and "no collection 'nope'" in stderr


def test_label_helpers(tmp_path: Path) -> None:
    assert split_labels(" cat, dog,,cat , 猫 ") == ("cat", "dog", "猫")
    path = tmp_path / "l.txt"
    path.write_text("# c\n\ndog\n cat \ndog\n", encoding="utf-8")
    assert read_labels_file(path) == ("dog", "cat")
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(SourceError):
        read_labels_file(path)
    with pytest.raises(ConfigError, match="distinct"):
        LabelSpec(("a", "a"))
    assert LabelSpec(("a",), scoring="cosine").effective_threshold == 0.25
    rng = np.random.default_rng(0)
    scores = score_images(rng.standard_normal((4, 8)), rng.standard_normal((3, 8)), "softmax", 100.0)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    assert passing_labels(np.array([0.2, 0.5, 0.3]), ["a", "b", "c"], 0.25) == {"b": 0.5, "c": 0.3}
