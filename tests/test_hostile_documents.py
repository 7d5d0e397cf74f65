"""Hostile documents and sidecars (issue 22 items 1, 2, 12; issue 16 item 5): no input makes one
giant chunk, fails a whole unit, or runs a parser without a time and memory budget."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
from helpers import run_cli

from mmindex.pipeline.embed import extract
from mmindex.pipeline.embed.chunking import MAX_WORD_CHARS, chunk_text, iter_chunks, max_chunk_chars
from mmindex.pipeline.embed.decode import MAX_SIDECAR_DEPTH, read_metadata
from mmindex.pipeline.embed.extract import extract_document
from mmindex.pipeline.embed.sandbox import DocumentLimits, ExtractionSandbox
from mmindex.pipeline.errors import DecodeError

REJECTED_HTML = "<html><body><p>before</p><p><![ x ]]></p></body></html>"  # bs4: ParserRejectedMarkup


def _letter_run(length: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return "".join(rng.choices(string.ascii_lowercase, k=length))


def _nested_html(depth: int, text: str = "deep text") -> str:
    return "<html><body>" + "<div><span>" * depth + text + "</span></div>" * depth + "</body></html>"


def _nested_json(depth: int) -> str:
    value: object = "leaf"
    for _ in range(depth - 1):
        value = {"k": value}
    return json.dumps(value)


# --- chunking -----------------------------------------------------------------------------------


def test_a_200kb_letter_run_becomes_many_chunks_within_the_cap(minilm) -> None:
    run = _letter_run(200_000)
    limit = 254
    chunks = chunk_text(run, minilm.count_tokens, limit, 32)
    cap = max_chunk_chars(limit)
    assert len(chunks) >= len(run) // cap
    assert all(len(chunk.text) <= cap for chunk in chunks)
    assert all(minilm.count_tokens(chunk.text) <= limit for chunk in chunks)
    assert chunks[0].char_start == 0 and chunks[-1].char_end == len(run)
    assert all(run[chunk.char_start : chunk.char_end] == chunk.text for chunk in chunks)


def test_a_2mb_letter_run_is_cut_by_characters(tiny_embedder) -> None:
    run = _letter_run(2_000_000, seed=1)
    limit = tiny_embedder.context_length - 2
    chunks = chunk_text(run, tiny_embedder.count_tokens, limit, 16)
    cap = max_chunk_chars(limit)
    assert len(chunks) >= len(run) // cap
    assert max(len(chunk.text) for chunk in chunks) <= cap
    # Consecutive chunks leave no gap.
    assert all(later.char_start <= earlier.char_end for earlier, later in zip(chunks, chunks[1:], strict=False))


def test_a_word_counted_as_one_token_is_still_cut() -> None:
    """A tokenizer that counts any run as one token ([UNK]) no longer makes one chunk of it."""
    cap = max_chunk_chars(50)
    assert cap % MAX_WORD_CHARS == 0  # whole pieces fill a chunk exactly
    run = "x" * (cap * 12)
    chunks = chunk_text(run, lambda _text: 1, 50, 0)
    assert len(chunks) == 12 and {len(chunk.text) for chunk in chunks} == {cap}


def test_chunks_are_made_one_at_a_time() -> None:
    """Chunking streams: the first chunk comes before the rest of the text is tokenized."""
    text = " ".join(f"w{n}" for n in range(100_000))
    counted: list[str] = []

    def count(word: str) -> int:
        counted.append(word)
        return 1

    chunks = iter_chunks(text, count, 50, 5)
    first = next(chunks)
    assert first.index == 0 and first.char_start == 0
    assert len(counted) < 200
    assert sum(1 for _ in chunks) > 2000


# --- extraction -----------------------------------------------------------------------------------


def test_html_nested_thousands_deep_is_read() -> None:
    extracted = extract_document(_nested_html(5000).encode(), "html")
    assert extracted.text == "deep text"


def test_markup_bs4_rejects_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match="rejected"):
        extract_document(REJECTED_HTML.encode(), "html")


def test_a_pdf_over_the_page_limit_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    from helpers import make_pdf

    monkeypatch.setattr(extract, "MAX_PDF_PAGES", 3)
    with pytest.raises(DecodeError, match="4 pages exceeds the limit of 3"):
        extract_document(make_pdf([["a"], ["b"], ["c"], ["d"]]), "pdf")
    assert extract_document(make_pdf([["a"], ["b"], ["c"]]), "pdf").text


def test_a_pdf_whose_text_passes_the_cap_fails() -> None:
    from helpers import make_pdf

    data = make_pdf([["x" * 400]] * 3)
    assert len(extract_document(data, "pdf", max_text_chars=2000).text) > 1000
    with pytest.raises(DecodeError, match="PDF text too large"):
        extract_document(data, "pdf", max_text_chars=1000)


def test_the_sandbox_stops_a_parser_past_its_time_and_recovers() -> None:
    with ExtractionSandbox(DocumentLimits(base_seconds=0.5, seconds_per_mb=0.0)) as sandbox:
        with pytest.raises(DecodeError, match="took longer than"):
            sandbox.extract(_nested_html(200_000).encode(), "html")
        assert sandbox.extract(b"<p>next one</p>", "html").text == "next one"


def test_the_sandbox_stops_a_parser_past_its_memory_and_recovers() -> None:
    markup = ("<p>" + "word " * 8_000_000 + "</p>").encode()  # 40 MB of text: more than the budget
    with ExtractionSandbox(DocumentLimits(memory_bytes=64 << 20)) as sandbox:
        with pytest.raises(DecodeError, match="MiB"):
            sandbox.extract(markup, "html")
        assert sandbox.extract(b"<h1>Title</h1><p>body</p>", "html").headings[0].title == "Title"


def test_the_sandbox_returns_the_parsers_reasons() -> None:
    with ExtractionSandbox(DocumentLimits()) as sandbox:
        with pytest.raises(DecodeError, match="rejected"):
            sandbox.extract(REJECTED_HTML.encode(), "html")
        with pytest.raises(DecodeError, match="unreadable PDF"):
            sandbox.extract(b"%PDF-1.4 nothing else", "pdf")


# --- sidecars -------------------------------------------------------------------------------------


def test_a_sidecar_nested_too_deep_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fine, deep = tmp_path / "fine.json", tmp_path / "deep.json"
    fine.write_text(_nested_json(MAX_SIDECAR_DEPTH))
    deep.write_text(_nested_json(MAX_SIDECAR_DEPTH + 1))
    assert read_metadata(fine) is not None
    assert read_metadata(deep) is None
    assert "nested deeper than" in caplog.text


def test_a_sidecar_with_too_many_keys_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    wide = tmp_path / "wide.json"
    wide.write_text(json.dumps({"a": {f"k{n}": n for n in range(5000)}}))
    assert read_metadata(wide) is None
    assert "more than" in caplog.text


# --- a real ingest --------------------------------------------------------------------------------


def _jpeg(path: Path) -> None:
    from PIL import Image
    from skimage import data

    Image.fromarray(data.astronaut()).save(path, format="JPEG", quality=85)


def test_hostile_documents_fail_alone_in_a_real_ingest(tmp_path: Path, tiny_local_dir: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good.txt").write_text("A perfectly fine note about cats.", encoding="utf-8")
    (corpus / "deep.html").write_text(_nested_html(3000, "the deep page"), encoding="utf-8")
    (corpus / "rejected.html").write_text(REJECTED_HTML, encoding="utf-8")
    (corpus / "run.txt").write_text(_letter_run(200_000), encoding="utf-8")
    (corpus / "big.md").write_text("# Big\n\n" + "word " * 100_000, encoding="utf-8")
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 9 0 R >> endobj\n%%EOF\n")
    _jpeg(corpus / "photo.jpg")
    (corpus / "photo.json").write_text(_nested_json(200))  # once made the embedded store's WAL unreadable
    flags = ["--root", str(tmp_path / "root")]
    result = run_cli("index", str(corpus), "-c", "hostile", "--model", f"local-dir:{tiny_local_dir}",
                     "--text-model", "none", "--max-document-bytes", "300000", "--json", *flags)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["images"] == 1 and report["failed"] == 3

    listed = run_cli("info", "-c", "hostile", "--failed", "--json", *flags)
    reasons = {item["path"]: item["error"] for item in json.loads(listed.stdout)}
    assert set(reasons) == {"rejected.html", "big.md", "broken.pdf"}
    assert "rejected" in reasons["rejected.html"]
    assert "--max-document-bytes 300000" in reasons["big.md"]
    assert "unreadable PDF" in reasons["broken.pdf"]

    import pyarrow.parquet as pq

    (version_dir,) = (tmp_path / "root" / "shards" / "hostile").iterdir()
    rows = [row for row in pq.read_table(version_dir).to_pylist() if row["status"] == "ok"]
    by_path: dict[str, list[dict]] = {}
    for row in rows:
        by_path.setdefault(row["path"], []).append(row)
    assert set(by_path) == {"good.txt", "deep.html", "run.txt", "photo.jpg"}
    assert [row["text"] for row in by_path["deep.html"]] == ["the deep page"]
    assert len(by_path["run.txt"]) > 200_000 // max_chunk_chars(75)
    assert all(len(row["text"]) <= max_chunk_chars(75) for row in by_path["run.txt"])
    assert by_path["photo.jpg"][0]["metadata_json"] is None
    # The embedded store holds every ok row (a too-deep payload once made its WAL unreadable).
    info = json.loads(run_cli("info", "-c", "hostile", "--json", *flags).stdout)["collections"][0]
    assert info["points"] == len(rows)
    found = run_cli("query", "the deep page", "-c", "hostile", *flags)
    assert found.code == 0, found.stderr


def test_alpha_is_composited_over_white_exactly_as_before() -> None:
    """The lighter compositing (no RGBA copies) gives Pillow's alpha_composite pixels, bit for bit."""
    import numpy as np
    from PIL import Image

    from mmindex.pipeline.embed.decode import to_rgb

    pixels = np.random.default_rng(0).integers(0, 256, (64, 80, 4), dtype=np.uint8)
    for image in (Image.fromarray(pixels, "RGBA"), Image.fromarray(pixels[..., :2].copy(), "LA")):
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        expected = Image.alpha_composite(white, image.convert("RGBA")).convert("RGB")
        np.testing.assert_array_equal(np.asarray(to_rgb(image)), np.asarray(expected))
