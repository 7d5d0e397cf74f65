"""Passage queries through a real ``mmindex serve`` process: a document collection with the real
text model (all-MiniLM-L6-v2) answers ``POST /retrieve`` and plain-text ``POST /search`` with the
same passages as ``mmindex query --json`` (dense, sparse, hybrid; ``auto`` picks hybrid, and CLIP
for a filter that admits only images), and CLIP queries over the chunks return hits that carry
the passage text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import GUIDE, SCORE_TOL, WAIT_S, run_cli
from helpers_serve import Server, start_server, stop_server
from PIL import Image

NOTES = "Lunch on Fridays is pizza. The office closes at six. Backups of the kitchen rota are on the wall."
QUESTION = "how do I rotate the API key"


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory, tiny_local_dir: Path, minilm) -> Path:
    """A guide, a note and one image indexed with the tiny CLIP model and the real text model."""
    base = tmp_path_factory.mktemp("serve-kb")
    corpus = base / "docs"
    corpus.mkdir()
    (corpus / "guide.md").write_text(GUIDE, encoding="utf-8")
    (corpus / "notes.txt").write_text(NOTES, encoding="utf-8")
    Image.new("RGB", (32, 24), (200, 40, 40)).save(corpus / "logo.png")
    root = base / "root"
    indexed = run_cli("index", str(corpus), "-c", "kb", "--root", str(root), "--model", f"local-dir:{tiny_local_dir}",
                      "--text-model", "all-MiniLM-L6-v2", "--device", "cpu", "--workers", "0")
    assert indexed.code == 0, indexed.stderr
    return root


@pytest.fixture(scope="module")
def server(kb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    started = start_server(kb, tmp_path_factory.mktemp("serve-kb-log") / "server.log", "-c", "kb")
    yield started
    stop_server(started)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=WAIT_S) as session:
        yield session


def cli_query(root: Path, *args: str) -> list[dict]:
    result = run_cli("query", *args, "-c", "kb", "--root", str(root), "--device", "cpu", "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def same_passages(served: list[dict], printed: list[dict]) -> None:
    """The server's passages are the CLI's: same points in the same order, same text and scores."""
    assert [p["point_id"] for p in served] == [p["id"] for p in printed]
    assert [p["text"] for p in served] == [p["text"] for p in printed]
    assert [p["score"] for p in served] == pytest.approx([p["score"] for p in printed], abs=SCORE_TOL)
    for passage, expected in zip(served, printed, strict=True):
        assert passage["score_kind"] == expected["score_kind"]
        assert {key: passage[key] for key in expected} == {**expected, "score": passage["score"]}


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_retrieve_answers_the_clis_passages(client: httpx.Client, kb: Path, mode: str) -> None:
    response = client.post("/retrieve", json={"question": QUESTION, "k": 3, "mode": mode})
    assert response.status_code == 200, response.text
    passages = response.json()
    assert passages and all(p["modality"] == "text" and p["text"] for p in passages)
    assert {p["score_kind"] for p in passages} == {{"dense": "cosine", "sparse": "bm25", "hybrid": "rrf"}[mode]}
    assert "Rotate" in passages[0]["text"] and passages[0]["source"] == "guide.md"
    same_passages(passages, cli_query(kb, QUESTION, "--mode", mode, "--limit", "3"))
    # the /search form of the same passage query answers the same
    assert client.post("/search", json={"text": QUESTION, "limit": 3, "mode": mode}).json() == passages


def test_a_plain_text_search_is_hybrid_passages_and_an_image_filter_is_clip(client: httpx.Client, kb: Path) -> None:
    auto = client.post("/search", json={"text": QUESTION, "limit": 3}).json()
    assert auto == client.post("/retrieve", json={"question": QUESTION, "k": 3}).json()
    assert {p["score_kind"] for p in auto} == {"rrf"}
    same_passages(auto, cli_query(kb, QUESTION, "--limit", "3"))
    images = client.post("/search", json={"text": QUESTION, "where": ["modality=image"]}).json()
    printed = cli_query(kb, QUESTION, "--where", "modality=image")
    assert [hit["key"] for hit in images] == [hit["key"] for hit in printed] and len(images) == 1
    assert images[0]["payload"]["modality"] == "image" and images[0]["contributions"]


def test_per_document_caps_the_passages_of_a_document(client: httpx.Client, kb: Path) -> None:
    body = {"question": "widget installation, backups and the office", "k": 5, "mode": "hybrid"}
    everything = client.post("/retrieve", json=body).json()
    assert len({p["source"] for p in everything}) < len(everything)  # the guide has several chunks
    capped = client.post("/retrieve", json={**body, "per_document": 1}).json()
    assert sorted(p["source"] for p in capped) == ["guide.md", "notes.txt"]
    same_passages(capped, cli_query(kb, body["question"], "--mode", "hybrid", "--limit", "5", "--per-document", "1"))
    clip = client.post("/search", json={"text": "widget", "mode": "clip", "per_document": 1})
    assert clip.status_code == 400 and "passage queries" in clip.json()["detail"]


def test_clip_hits_on_chunks_carry_the_passage_text(client: httpx.Client, kb: Path) -> None:
    hits = client.post("/search", json={"text": QUESTION, "where": ["modality=text"], "mode": "clip", "limit": 10}).json()
    printed = cli_query(kb, QUESTION, "--where", "modality=text", "--mode", "clip", "--limit", "10")
    assert [hit["key"] for hit in hits] == [hit["key"] for hit in printed] and len(hits) >= 3
    assert [hit["score"] for hit in hits] == pytest.approx([hit["score"] for hit in printed], abs=SCORE_TOL)
    texts = [hit["payload"]["text"] for hit in hits]
    assert all(text for text in texts) and any("Rotate" in text for text in texts)
    assert texts == [hit["payload"]["text"] for hit in printed]
    item = client.get(f"/items/{hits[0]['point_id']}").json()
    assert item["payload"]["text"] == texts[0] and item["payload"]["modality"] == "text"
