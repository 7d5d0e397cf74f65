"""`mmindex index --labels`: images are labeled at ingest, and points a later ingest rewrites
are labeled again with the remembered labels."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import run_cli
from PIL import Image
from skimage import data


def query_all(flags: list[str]) -> dict[str, dict]:
    result = run_cli("query", "x", "-c", "p", "--where", "modality=image", "--limit", "100", "--json", *flags)
    assert result.code == 0, result.stderr
    return {hit["payload"]["path"]: hit["payload"] for hit in json.loads(result.stdout)}


def test_labels_at_ingest_survive_rewrites(tmp_path: Path, photo_corpus: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(photo_corpus, corpus)
    flags = ["--root", str(tmp_path / "root")]
    result = run_cli("index", str(corpus), "-c", "p", "--model", f"local-dir:{tiny_local_dir}",
                     "--labels", "cat,rocket", "--label-threshold", "0", "--json", *flags)
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["labeled"] == 6
    labeled = query_all(flags)
    assert len(labeled) == 6 and all(set(payload["labels"]) == {"cat", "rocket"} for payload in labeled.values())
    assert all(abs(sum(payload["label_scores"].values()) - 1.0) < 1e-4 for payload in labeled.values())

    Image.fromarray(data.camera()).save(corpus / "animals" / "cat.png")  # rewritten point
    result = run_cli("index", str(corpus), "-c", "p", "--json", *flags)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["embedded"] == 1 and report["labeled"] == 1
    relabeled = query_all(flags)
    assert set(relabeled["animals/cat.png"]["labels"]) == {"cat", "rocket"}
    assert relabeled["rocket.bmp"]["label_scores"] == labeled["rocket.bmp"]["label_scores"]
