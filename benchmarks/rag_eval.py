"""RAG retrieval quality on two evaluation sets: naive baseline, dense, sparse, hybrid, CLIP-text.

    python benchmarks/rag_eval.py                  # both sets, edge backend, tiny random-init CLIP
    python benchmarks/rag_eval.py --k 1,3,5,10     # hit@k for each k (one ranked list, read to the largest k)
    python benchmarks/rag_eval.py --sweep          # + chunk context schemes and chunk sizes (dense/hybrid)
    python benchmarks/rag_eval.py --set packages --backend client
    python benchmarks/rag_eval.py --clip-model ViT-B-32 --clip-pretrained /path/open_clip_model.safetensors

Sets (``--set``): ``handwritten`` (``_rag_eval_set.py``: 36 short Markdown documents of fictional
facts, 50 questions; a hit is a passage containing the answer text) and ``packages``
(``_rag_package_set.py``: the long descriptions of installed packages, questions that do not name
the package; a hit is a passage of the right package). Everything goes through the real
pipeline: ``index_source`` chunks the documents at their headings, embeds each chunk with its
context (``--context``: the document's title and heading path ahead of the chunk) with
all-MiniLM-L6-v2 and the CLIP model, BM25 vectors come from qdrant-edge's BM25, and each question
is answered by ``Retriever.retrieve``.

The naive baseline is what the simplest RAG retriever scores: the same MiniLM over each
document's text cut into plain 900-character pieces, ranked by brute-force cosine.

Fusion: ``hybrid`` is the default (RRF k=2, equal weights), ``hybrid-dbsf`` Qdrant's
distribution-based score fusion. The weighted-RRF variants (``rrf w=2``, ``rrf k=60 w=2`` ...) are fused here from
the dense and sparse lists the store returned (the same formula as Qdrant's; the header says on how
many questions this reproduces the store's own ``hybrid`` list), and the held-out table chooses a
fusion (weights or dbsf) on random halves of the questions and scores it on the other halves.

CLIP-text: without ``--clip-pretrained`` the CLIP model is a tiny random-init one (no real CLIP
weights can be downloaded here), so its row is a floor that shows the plumbing, not CLIP's quality.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import _rag_eval_set
import _rag_package_set
from _tiny import tiny_local_dir
from rich.console import Console
from rich.table import Table

console = Console()
progress = Console(stderr=True)  # a line per indexing as it is scored, so a long run shows where it is
NAIVE_CHARS = 900
DENSE_WEIGHTS = (1.0, 1.5, 2.0, 3.0)
RRF_K = 2
# Other RRF constants fused here beside the store's default k=2 (a larger k flattens the ranks:
# 60 is the constant of the original RRF paper).
OTHER_RRF_KS = (10, 60)
SPARSE_TIE = 0.999  # the store's default sparse weight (ties go to the dense list)


@dataclass(frozen=True)
class Hit:
    """What relevance looks at in a ranked passage."""

    text: str
    source: str
    key: str


@dataclass(frozen=True)
class EvalQuestion:
    text: str
    kind: str
    relevant: Callable[[Hit], bool]


@dataclass
class EvalSet:
    name: str
    documents: dict[str, str]  # file name -> text
    questions: list[EvalQuestion]
    note: str = ""

    def write(self, corpus: Path) -> None:
        corpus.mkdir(parents=True, exist_ok=True)
        for name, text in self.documents.items():
            (corpus / name).write_text(text, encoding="utf-8")


def handwritten_set() -> EvalSet:
    def contains(answer: str) -> Callable[[Hit], bool]:
        return lambda hit: answer in hit.text

    docs = {doc.name: markdown(doc) for doc in _rag_eval_set.DOCS}
    questions = [EvalQuestion(q.text, q.kind, contains(q.answer)) for q in _rag_eval_set.QUESTIONS]
    return EvalSet("handwritten", docs, questions)


def package_set() -> EvalSet:
    def from_doc(name: str) -> Callable[[Hit], bool]:
        return lambda hit: hit.source == name

    docs, questions, left_out = _rag_package_set.load()
    names = {doc.package: doc.name for doc in docs}
    return EvalSet("packages", {doc.name: doc.text for doc in docs},
                   [EvalQuestion(q.text, "description", from_doc(names[q.package])) for q in questions],
                   f"{left_out} questions left out (package missing or changed)" if left_out else "")


def markdown(doc: _rag_eval_set.Doc) -> str:
    body = "".join(f"## {heading}\n\n{text}\n\n" for heading, text in doc.sections)
    return f"# {doc.title}\n\n{body}"


SETS: dict[str, Callable[[], EvalSet]] = {"handwritten": handwritten_set, "packages": package_set}


@dataclass
class Score:
    """First-relevant ranks of a mode's answers (None: not in the list)."""

    ranks: list[int | None] = field(default_factory=list)

    def hit(self, k: int, rows: Sequence[int] | None = None) -> float:
        chosen = [self.ranks[i] for i in rows] if rows is not None else self.ranks
        return sum(1 for r in chosen if r is not None and r <= k) / max(1, len(chosen))

    def mrr(self, depth: int, rows: Sequence[int] | None = None) -> float:
        chosen = [self.ranks[i] for i in rows] if rows is not None else self.ranks
        return sum(1.0 / r for r in chosen if r is not None and r <= depth) / max(1, len(chosen))


def first_relevant(hits: Sequence[Hit], question: EvalQuestion, depth: int) -> int | None:
    return next((rank for rank, hit in enumerate(hits[:depth], 1) if question.relevant(hit)), None)


def naive_baseline(eval_set: EvalSet, depth: int) -> Score:
    """The same MiniLM over each document cut into plain 900-character pieces, brute-force cosine."""
    import numpy as np

    from mmindex.pipeline.embed.text_model import load_text_embedder

    model = load_text_embedder("all-MiniLM-L6-v2", "cpu")
    chunks = [Hit(text[i : i + NAIVE_CHARS], name, f"{name}#{i}")
              for name, text in eval_set.documents.items() for i in range(0, len(text), NAIVE_CHARS)]
    vectors = model.encode([chunk.text for chunk in chunks])
    questions = model.encode([question.text for question in eval_set.questions])
    score = Score()
    for question, vector in zip(eval_set.questions, questions, strict=True):
        order = np.argsort(-(vectors @ vector))[:depth]
        score.ranks.append(first_relevant([chunks[i] for i in order], question, depth))
    return score


def rrf(dense: Sequence[Hit], sparse: Sequence[Hit], weights: tuple[float, float], k: int = RRF_K) -> list[Hit]:
    """Weighted reciprocal rank fusion of two ranked lists as Qdrant computes it: a hit at 0-based
    position ``i`` of a list of weight ``w`` scores ``1 / ((i + 1) / w + k - 1)``, summed over the
    lists (checked against the store's own hybrid list by ``fusion_check``)."""
    scores: dict[str, float] = {}
    by_key: dict[str, Hit] = {}
    for weight, hits in zip(weights, (dense, sparse), strict=True):
        for position, hit in enumerate(hits):
            scores[hit.key] = scores.get(hit.key, 0.0) + 1.0 / ((position + 1) / weight + k - 1)
            by_key.setdefault(hit.key, hit)
    return [by_key[key] for key in sorted(scores, key=lambda key: -scores[key])]


@contextmanager
def chunk_tokens(tokens: int | None) -> Iterator[None]:
    """Index with another chunk token budget than the shipped one (a measurement knob only)."""
    from mmindex.pipeline.embed import text_model

    saved = text_model.TEXT_CHUNK_TOKENS
    if tokens is not None:
        text_model.TEXT_CHUNK_TOKENS = tokens
    try:
        yield
    finally:
        text_model.TEXT_CHUNK_TOKENS = saved


@dataclass
class ConfigRun:
    """One indexing of a set (context scheme, chunk size) and the ranked lists of its questions."""

    context: str
    tokens: int
    chunks: int
    index_seconds: float
    lists: dict[str, list[list[Hit]]]  # mode -> per question ranked hits
    latency_ms: dict[str, float]


def run_config(eval_set: EvalSet, work: Path, context: str, tokens: int, modes: Sequence[str], args: Any,
               spec: Any) -> ConfigRun:
    from mmindex.api import Index
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    tag = f"{eval_set.name}-{context}-{tokens}"
    url = None if args.backend == "edge" else f"local:{work / ('qdrant-client-' + tag)}"
    settings = Settings(root=work / f"root-{tag}", qdrant_url=url, text_model="all-MiniLM-L6-v2", workers=0)
    started = time.perf_counter()
    with chunk_tokens(tokens):
        report = index_source(IndexRequest(work / f"corpus-{eval_set.name}", "eval", model=spec, chunk_context=context),
                              settings)
    seconds = time.perf_counter() - started
    depth = max(args.k_values)
    lists: dict[str, list[list[Hit]]] = {}
    latency: dict[str, float] = {}
    with Index("eval", settings=settings) as index:
        retrievers = {"rrf": index.retriever(k=depth, candidates=args.candidates),
                      "dbsf": index.retriever(k=depth, candidates=args.candidates, fusion="dbsf")}
        for mode in modes:
            retriever = retrievers["dbsf" if mode == "hybrid-dbsf" else "rrf"]
            store_mode = "hybrid" if mode == "hybrid-dbsf" else mode
            # dense and sparse are read as deep as hybrid's branches, so weighted fusion can be redone here
            limit = args.candidates if mode in ("dense", "sparse") else depth
            started = time.perf_counter()
            lists[mode] = [[Hit(p.text, p.source, p.key) for p in retriever.retrieve(q.text, limit, mode=store_mode)]
                           for q in eval_set.questions]
            latency[mode] = (time.perf_counter() - started) / max(1, len(eval_set.questions)) * 1000
    run = ConfigRun(context, tokens, report.counts.text_chunks, seconds, lists, latency)
    line = {mode: metrics(score, args.k_values) for mode, score in scores_of(run, eval_set, depth).items()}
    progress.print(f"{eval_set.name} context={context} tokens={tokens} chunks={run.chunks}: "
                   + json.dumps({mode: {m: round(v, 3) for m, v in row.items()} for mode, row in line.items()
                                 if mode in ("dense", "sparse", "hybrid", "hybrid-dbsf", "rrf w=1")}))
    return run


def scores_of(run: ConfigRun, eval_set: EvalSet, depth: int) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for mode, lists in run.lists.items():
        scores[mode] = Score([first_relevant(hits, q, depth) for hits, q in zip(lists, eval_set.questions, strict=True)])
    if "dense" in run.lists and "sparse" in run.lists:
        for k in (RRF_K, *OTHER_RRF_KS):
            for weight in DENSE_WEIGHTS:
                fused = [rrf(d, s, (weight, SPARSE_TIE), k)
                         for d, s in zip(run.lists["dense"], run.lists["sparse"], strict=True)]
                scores[fusion_name(k, weight)] = Score([first_relevant(h, q, depth)
                                                        for h, q in zip(fused, eval_set.questions, strict=True)])
    return scores


def fusion_name(k: int, weight: float) -> str:
    """The row name of weighted RRF with constant ``k`` and dense weight ``weight`` (``k`` shown
    only when it is not the store's default)."""
    return f"rrf w={weight:g}" if k == RRF_K else f"rrf k={k} w={weight:g}"


def fusion_check(run: ConfigRun, depth: int) -> tuple[int, int]:
    """On how many questions the locally fused default RRF list equals the store's hybrid list (top ``depth`` keys)."""
    if not {"dense", "sparse", "hybrid"} <= set(run.lists):
        return 0, 0
    same = sum([h.key for h in rrf(d, s, (1.0, SPARSE_TIE))[:depth]] == [h.key for h in hybrid[:depth]]
               for d, s, hybrid in zip(run.lists["dense"], run.lists["sparse"], run.lists["hybrid"], strict=True))
    return same, len(run.lists["hybrid"])


@dataclass
class HeldOut:
    choice: str
    chosen: float
    default: float
    dense: float
    naive: float


def held_out(scores: dict[str, Score], naive: Score, count: int, splits: int, depth: int) -> list[HeldOut]:
    """Choose the fusion (an RRF k and dense weight, or dbsf) on a random half of the questions by MRR, score it on the other half."""
    candidates = [name for name in scores if name.startswith("rrf ") or name == "hybrid-dbsf"]
    results = []
    for seed in range(splits):
        order = list(range(count))
        random.Random(seed).shuffle(order)
        dev, test = order[: count // 2], order[count // 2 :]
        best = max(candidates, key=lambda name: scores[name].mrr(depth, dev))
        results.append(HeldOut(best, scores[best].mrr(depth, test), scores["hybrid"].mrr(depth, test),
                               scores["dense"].mrr(depth, test), naive.mrr(depth, test)))
    return results


def metrics(score: Score, k_values: Sequence[int]) -> dict[str, float]:
    depth = max(k_values)
    return {**{f"hit@{k}": score.hit(k) for k in k_values}, f"mrr@{depth}": score.mrr(depth)}


def evaluate_set(eval_set: EvalSet, work: Path, args: Any, spec: Any) -> dict[str, Any]:
    from mmindex.pipeline.embed.chunking import CONTEXT_SCHEMES, DEFAULT_CONTEXT
    from mmindex.pipeline.embed.text_model import TEXT_CHUNK_TOKENS

    eval_set.write(work / f"corpus-{eval_set.name}")
    depth = max(args.k_values)
    context = args.context or DEFAULT_CONTEXT
    main = run_config(eval_set, work, context, TEXT_CHUNK_TOKENS, args.modes, args, spec)
    scores = scores_of(main, eval_set, depth)
    naive = naive_baseline(eval_set, depth)
    progress.print(f"{eval_set.name} naive: {json.dumps({m: round(v, 3) for m, v in metrics(naive, args.k_values).items()})}")
    result: dict[str, Any] = {
        "documents": len(eval_set.documents), "questions": len(eval_set.questions), "chunks": main.chunks,
        "context": context, "chunk_tokens": TEXT_CHUNK_TOKENS, "note": eval_set.note,
        "index_seconds": main.index_seconds, "latency_ms": main.latency_ms,
        "fusion_check": fusion_check(main, depth),
        "results": {"naive": metrics(naive, args.k_values), **{m: metrics(s, args.k_values) for m, s in scores.items()}},
        "by_kind": {m: {kind: s.mrr(depth, [i for i, q in enumerate(eval_set.questions) if q.kind == kind])
                        for kind in dict.fromkeys(q.kind for q in eval_set.questions)} for m, s in scores.items()},
    }
    if args.splits:
        result["held_out"] = [vars(split) for split in held_out(scores, naive, len(eval_set.questions), args.splits, depth)]
    if args.sweep:
        configs = [(scheme, TEXT_CHUNK_TOKENS) for scheme in CONTEXT_SCHEMES if scheme != context]
        configs += [(context, tokens) for tokens in (128, 254) if tokens != TEXT_CHUNK_TOKENS]
        sweep = [{"context": context, "chunk_tokens": TEXT_CHUNK_TOKENS, "chunks": main.chunks,
                  **{m: metrics(scores[m], args.k_values) for m in ("dense", "rrf w=1")}}]
        for scheme, tokens in configs:
            run = run_config(eval_set, work, scheme, tokens, ("dense", "sparse"), args, spec)
            swept = scores_of(run, eval_set, depth)
            sweep.append({"context": scheme, "chunk_tokens": tokens, "chunks": run.chunks,
                          **{m: metrics(swept[m], args.k_values) for m in ("dense", "rrf w=1")}})
        result["sweep"] = sweep
    return result


def print_set(name: str, result: dict[str, Any], k_values: Sequence[int], clip_label: str, backend: str) -> None:
    depth = max(k_values)
    same, total = result["fusion_check"]
    console.print(f"\n[bold]{name}[/]: {result['documents']} documents -> {result['chunks']} chunks "
                  f"(context {result['context']}, {result['chunk_tokens']} tokens), {result['questions']} questions; "
                  f"backend {backend}; indexed in {result['index_seconds']:.1f}s; CLIP: {clip_label}"
                  + (f"; {result['note']}" if result["note"] else ""))
    console.print(f"local RRF reproduces the store's hybrid top-{depth} on {same}/{total} questions")
    kinds = list(next(iter(result["by_kind"].values())).keys()) if result["by_kind"] else []
    labels = {"naive": f"naive baseline (MiniLM, {NAIVE_CHARS}-char chunks, cosine)", "dense": "dense (all-MiniLM-L6-v2)",
              "sparse": "sparse (BM25)", "hybrid": "hybrid (RRF k=2, default)", "hybrid-dbsf": "hybrid (DBSF)",
              "clip": "CLIP-text"}
    table = Table("mode", *(f"hit@{k}" for k in k_values), f"MRR@{depth}",
                  *((f"{kind} MRR" for kind in kinds) if len(kinds) > 1 else ()), "ms/query")
    for mode, row in result["results"].items():
        by_kind = result["by_kind"].get(mode, {})
        table.add_row(labels.get(mode, f"hybrid ({mode}, fused here)"), *(f"{row[f'hit@{k}']:.3f}" for k in k_values),
                      f"{row[f'mrr@{depth}']:.3f}",
                      *((f"{by_kind[kind]:.3f}" if kind in by_kind else "" for kind in kinds) if len(kinds) > 1 else ()),
                      f"{result['latency_ms'][mode]:.0f}" if mode in result["latency_ms"] else "")
    console.print(table)
    if result.get("held_out"):
        split_table = Table("split", "fusion chosen on dev", "its MRR (test)", "default hybrid", "dense", "naive")
        for number, split in enumerate(result["held_out"], 1):
            split_table.add_row(str(number), split["choice"], *(f"{split[key]:.3f}" for key in ("chosen", "default", "dense", "naive")))
        console.print(split_table)
    if result.get("sweep"):
        sweep_table = Table("context", "chunk tokens", "chunks", *(f"dense hit@{k}" for k in k_values), "dense MRR",
                            "hybrid hit@1", "hybrid MRR")
        for row in result["sweep"]:
            sweep_table.add_row(row["context"], str(row["chunk_tokens"]), str(row["chunks"]),
                                *(f"{row['dense'][f'hit@{k}']:.3f}" for k in k_values), f"{row['dense'][f'mrr@{depth}']:.3f}",
                                f"{row['rrf w=1']['hit@1']:.3f}", f"{row['rrf w=1'][f'mrr@{depth}']:.3f}")
        console.print(sweep_table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", default="handwritten,packages", help="evaluation sets, comma-separated")
    parser.add_argument("--backend", choices=("edge", "client"), default="edge")
    parser.add_argument("--clip-model", default=None, help="open_clip architecture with real weights")
    parser.add_argument("--clip-pretrained", default=None, help="its weights tag or checkpoint file")
    parser.add_argument("--candidates", type=int, default=50, help="per-branch candidates of hybrid search")
    parser.add_argument("--k", default="1,5,10", help="the k of hit@k, comma-separated (MRR is read to the largest)")
    parser.add_argument("--context", default=None, help="chunk context scheme (default: the shipped default)")
    parser.add_argument("--modes", default="dense,sparse,hybrid,hybrid-dbsf,clip")
    parser.add_argument("--sweep", action="store_true", help="also index with the other context schemes and chunk sizes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--splits", type=int, default=6,
                        help="random dev/test halves on which the fusion is chosen and checked (0: skip)")
    args = parser.parse_args()
    args.k_values = sorted({int(k) for k in args.k.split(",")})
    args.modes = tuple(args.modes.split(","))
    if args.splits and not {"dense", "sparse", "hybrid"} <= set(args.modes):
        parser.error("--splits needs the dense, sparse and hybrid modes")

    from mmindex.pipeline.embed.model import ModelSpec

    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="mmindex-rag-eval-") as tmp:
        work = Path(tmp)
        if args.clip_model:
            spec, clip_label = ModelSpec(args.clip_model, args.clip_pretrained), f"{args.clip_model} ({args.clip_pretrained})"
        else:
            spec = ModelSpec(f"local-dir:{tiny_local_dir(work / 'tiny-clip')}")
            clip_label = "tiny random-init CLIP (no real weights offline)"
        for name in args.set.split(","):
            results[name] = evaluate_set(SETS[name](), work, args, spec)
            if not args.json:
                print_set(name, results[name], args.k_values, clip_label, args.backend)
    if args.json:
        json.dump({"sets": results, "clip": clip_label, "backend": args.backend, "k": args.k_values}, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
