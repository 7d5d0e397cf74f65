"""RAG retrieval quality: hit@1, hit@5 and MRR@10 of dense, sparse, hybrid and CLIP-text search.

    python benchmarks/rag_eval.py                  # edge backend, tiny random-init CLIP
    python benchmarks/rag_eval.py --backend client # qdrant-client local mode
    python benchmarks/rag_eval.py --clip-model ViT-B-32 --clip-pretrained /path/open_clip_model.safetensors

The evaluation set (``_rag_eval_set.py``) is 36 short Markdown documents of fictional facts and
50 questions whose answer passage is known (20 paraphrases, 18 keyword/identifier lookups, 12
mixed). Everything goes through the real pipeline: ``index_source`` chunks the documents at
their headings, embeds chunks with all-MiniLM-L6-v2 (``text`` vector) and the CLIP model, BM25
vectors are built by qdrant-edge's BM25, and each question is answered by ``Index.retrieve``.

A question is a hit at rank r when the r-th passage contains its answer text.

CLIP-text: without ``--clip-pretrained`` the CLIP model is a tiny random-init one (no real CLIP
weights can be downloaded here), so its row is a floor that shows the plumbing, not CLIP's
quality; pass real weights to measure CLIP's text tower.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _rag_eval_set import DOCS, QUESTIONS, Doc
from _tiny import tiny_local_dir
from rich.console import Console
from rich.table import Table

console = Console()
MODES = ("dense", "sparse", "hybrid", "hybrid-dense2", "hybrid-k60", "clip")
DEPTH = 10


@dataclass
class Score:
    hits1: int = 0
    hits5: int = 0
    reciprocal: float = 0.0
    count: int = 0

    def add(self, rank: int | None) -> None:
        self.count += 1
        if rank is not None:
            self.hits1 += rank == 1
            self.hits5 += rank <= 5
            self.reciprocal += 1.0 / rank

    def row(self) -> tuple[float, float, float]:
        return self.hits1 / self.count, self.hits5 / self.count, self.reciprocal / self.count


@dataclass
class HeldOut:
    """One dev/test split: the dense weight that did best on dev, and both modes' MRR on test."""

    weight: float
    hybrid: float
    dense: float


DENSE_WEIGHTS = (1.0, 1.5, 2.0, 3.0)


def weight_check(index, candidates: int, splits: int) -> list[HeldOut]:
    """Choose the hybrid dense weight on a random half of the questions, score it on the other half."""
    import random

    def reciprocal_ranks(retriever, mode: str) -> list[float]:
        ranks = []
        for question in QUESTIONS:
            passages = retriever.retrieve(question.text, mode=mode)
            rank = next((r for r, p in enumerate(passages, 1) if question.answer in p.text), None)
            ranks.append(0.0 if rank is None else 1.0 / rank)
        return ranks

    by_weight = {w: reciprocal_ranks(index.retriever(k=DEPTH, candidates=candidates, rrf_weights=(w, 0.999)), "hybrid")
                 for w in DENSE_WEIGHTS}
    dense = reciprocal_ranks(index.retriever(k=DEPTH, candidates=candidates), "dense")
    results = []
    for seed in range(splits):
        order = list(range(len(QUESTIONS)))
        random.Random(seed).shuffle(order)
        dev, test = order[: len(order) // 2], order[len(order) // 2 :]
        best = max(DENSE_WEIGHTS, key=lambda w: sum(by_weight[w][i] for i in dev))
        results.append(HeldOut(best, sum(by_weight[best][i] for i in test) / len(test), sum(dense[i] for i in test) / len(test)))
    return results


NAIVE_CHARS = 900


def naive_baseline(depth: int) -> Score:
    """What the simplest RAG retriever scores: the same MiniLM over each document's Markdown cut
    into plain 900-character pieces, ranked by brute-force cosine."""
    import numpy as np

    from mmindex.pipeline.embed.text_model import load_text_embedder

    model = load_text_embedder("all-MiniLM-L6-v2", "cpu")
    chunks = [text[i : i + NAIVE_CHARS] for text in map(markdown, DOCS) for i in range(0, len(text), NAIVE_CHARS)]
    vectors = model.encode(chunks)
    score = Score()
    for question in QUESTIONS:
        order = np.argsort(-(vectors @ model.encode([question.text])[0]))[:depth]
        score.add(next((r for r, i in enumerate(order, 1) if question.answer in chunks[i]), None))
    return score


def write_docs(corpus: Path) -> None:
    corpus.mkdir(parents=True, exist_ok=True)
    for doc in DOCS:
        (corpus / doc.name).write_text(markdown(doc), encoding="utf-8")


def markdown(doc: Doc) -> str:
    body = "".join(f"## {heading}\n\n{text}\n\n" for heading, text in doc.sections)
    return f"# {doc.title}\n\n{body}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("edge", "client"), default="edge")
    parser.add_argument("--clip-model", default=None, help="open_clip architecture with real weights")
    parser.add_argument("--clip-pretrained", default=None, help="its weights tag or checkpoint file")
    parser.add_argument("--candidates", type=int, default=50, help="per-branch candidates of hybrid search")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--splits", type=int, default=6,
                        help="random dev/test halves on which the hybrid dense weight is chosen and checked (0: skip)")
    args = parser.parse_args()

    from mmindex.api import Index
    from mmindex.pipeline.embed.model import ModelSpec
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    with tempfile.TemporaryDirectory(prefix="mmindex-rag-eval-") as tmp:
        work = Path(tmp)
        write_docs(work / "corpus")
        if args.clip_model:
            spec, clip_label = ModelSpec(args.clip_model, args.clip_pretrained), f"{args.clip_model} ({args.clip_pretrained})"
        else:
            spec = ModelSpec(f"local-dir:{tiny_local_dir(work / 'tiny-clip')}")
            clip_label = "tiny random-init CLIP (no real weights offline)"
        url = None if args.backend == "edge" else f"local:{work / 'qdrant-client'}"
        settings = Settings(root=work / "root", qdrant_url=url, text_model="all-MiniLM-L6-v2", workers=0)
        started = time.perf_counter()
        report = index_source(IndexRequest(work / "corpus", "eval", model=spec), settings)
        index_seconds = time.perf_counter() - started
        scores: dict[str, dict[str, Score]] = {mode: defaultdict(Score) for mode in MODES}
        latency: dict[str, float] = {}
        with Index("eval", settings=settings) as index:
            retriever = index.retriever(k=DEPTH, candidates=args.candidates)
            variants = {  # hybrid with the other fusion settings, for comparison
                "hybrid-dense2": index.retriever(k=DEPTH, candidates=args.candidates, rrf_weights=(2.0, 0.999)),
                "hybrid-k60": index.retriever(k=DEPTH, candidates=args.candidates, rrf_k=60),
            }
            for mode in MODES:
                started = time.perf_counter()
                for question in QUESTIONS:
                    if mode in variants:
                        passages = variants[mode].retrieve(question.text, mode="hybrid")
                    else:
                        passages = retriever.retrieve(question.text, mode=mode)  # type: ignore[arg-type]
                    rank = next((r for r, p in enumerate(passages, 1) if question.answer in p.text), None)
                    scores[mode]["all"].add(rank)
                    scores[mode][question.kind].add(rank)
                latency[mode] = (time.perf_counter() - started) / len(QUESTIONS) * 1000
            held_out = weight_check(index, args.candidates, args.splits) if args.splits else []
    results = {
        mode: {kind: dict(zip(("hit@1", "hit@5", "mrr@10"), score.row(), strict=True)) for kind, score in by_kind.items()}
        for mode, by_kind in scores.items()
    }
    if args.json:
        json.dump({"results": results, "chunks": report.counts.text_chunks, "documents": len(DOCS),
                   "questions": len(QUESTIONS), "clip": clip_label, "backend": args.backend,
                   "held_out": [vars(split) for split in held_out]}, sys.stdout, indent=2)
        print()
        return
    console.print(f"{len(DOCS)} documents -> {report.counts.text_chunks} chunks, {len(QUESTIONS)} questions; "
                  f"backend {args.backend}; indexed in {index_seconds:.1f}s; CLIP: {clip_label}")
    names = {"dense": "dense (all-MiniLM-L6-v2)", "sparse": "sparse (BM25)", "hybrid": "hybrid (RRF k=2, default)",
             "hybrid-dense2": "hybrid (RRF k=2, dense weight 2)", "hybrid-k60": "hybrid (RRF k=60)", "clip": "CLIP-text"}
    table = Table("mode", "hit@1", "hit@5", "MRR@10", "paraphrase MRR", "keyword MRR", "mixed MRR", "ms/query")
    for mode in MODES:
        row = results[mode]
        table.add_row(names[mode], *(f"{row['all'][m]:.3f}" for m in ("hit@1", "hit@5", "mrr@10")),
                      *(f"{row[kind]['mrr@10']:.3f}" for kind in ("paraphrase", "keyword", "mixed")),
                      f"{latency[mode]:.1f}")
    naive = naive_baseline(DEPTH)
    table.add_row(f"naive baseline (MiniLM, {NAIVE_CHARS}-char chunks, cosine)",
                  *(f"{value:.3f}" for value in naive.row()), "", "", "", "")
    console.print(table)
    if held_out:
        split_table = Table("split", "dense weight chosen on dev", "hybrid MRR@10 (test)", "dense MRR@10 (test)")
        for number, split in enumerate(held_out, 1):
            split_table.add_row(str(number), f"{split.weight:g}", f"{split.hybrid:.3f}", f"{split.dense:.3f}")
        mean = sum(split.hybrid - split.dense for split in held_out) / len(held_out)
        console.print(split_table)
        console.print(f"held-out: hybrid minus dense MRR@10, mean over {len(held_out)} splits: {mean:+.3f}")


if __name__ == "__main__":
    main()
