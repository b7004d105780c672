"""Retrieval quality and latency on the CRUD-RAG question sets: BM25-only vs dense-only vs hybrid.

Prints one JSON line per (question set, retriever) and one for the rank_bm25-vs-bm25s timing.
The index (with its embeddings) is cached under .bench-cache/ and brought up to date by an incremental
ingest each run, so later runs never re-embed unchanged chunks.

    python benchmarks/retrieval.py --subset 20000      # seeded subset holding every gold document
    python benchmarks/retrieval.py --full              # all 68,798 documents
    python benchmarks/retrieval.py --subset 20000 --anchor   # also plain bm25s+jieba, 128-char chunks
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, crud_dir  # noqa: E402

from chronorag.config import BM25_CHINESE, Settings, load_settings  # noqa: E402
from chronorag.engine import ChronoRAG  # noqa: E402
from chronorag.ingest.loaders import load_crud  # noqa: E402
from chronorag.retrieval.hybrid import ByText  # noqa: E402

NO_ANSWER = "无法推断"


def load_questions(name: str) -> list[dict]:
    data = json.loads((crud_dir() / name).read_text(encoding="utf-8"))
    out = []
    for item_id, item in data.items():
        gold = item.get("gold_doc_ids") or []
        for q, a in zip(item["question"], item["answers"]):
            out.append({"item": item_id, "question": q, "answer": a, "gold": gold})
    return out


def gold_ids() -> set[str]:
    ids: set[str] = set()
    for name in ("questions_1doc.json", "questions_2docs.json"):
        for q in load_questions(name):
            ids.update(q["gold"])
    return ids


def pick_subset(n: int, seed: int) -> set[str] | None:
    """``n`` corpus ids chosen with a fixed seed, always including every gold document."""
    if n <= 0:
        return None
    gold = gold_ids()
    all_ids = [doc.doc_id for doc in load_crud(crud_dir() / "corpus.jsonl.gz") if hasattr(doc, "doc_id")]
    rest = sorted(set(all_ids) - gold)
    random.Random(seed).shuffle(rest)
    return gold | set(rest[: max(0, n - len(gold))])


def build(engine: ChronoRAG, subset: set[str] | None) -> None:
    from tqdm import tqdm

    records = load_crud(crud_dir() / "corpus.jsonl.gz")
    if subset is not None:
        records = (r for r in records if getattr(r, "doc_id", None) in subset)
    bar = tqdm(desc="ingest", unit="doc", file=sys.stderr)
    ibar = tqdm(desc="index", unit="chunk-update", file=sys.stderr)
    report = engine.insert(records, progress=bar.update, index_progress=lambda _name, n: ibar.update(n))
    bar.close()
    ibar.close()
    print(f"# {report.summary_line()}", file=sys.stderr)


def evaluate(engine: ChronoRAG, questions: list[dict], retrievers, top_k: int = 8, use_graph: bool = True) -> dict:
    rec = {1: [], 5: [], 8: []}
    span_hits, lat = [], []
    for q in questions:
        t0 = time.perf_counter()
        hits = engine.retrieve(q["question"], top_k=top_k, retrievers=retrievers, use_graph=use_graph)
        lat.append((time.perf_counter() - t0) * 1000)
        if q["gold"]:
            for k in rec:
                docs = {h.doc_id for h in hits[:k]}
                rec[k].append(len(docs & set(q["gold"])) / len(q["gold"]))
        if q["answer"] and q["answer"] != NO_ANSWER:
            span_hits.append(any(q["answer"] in h.text for h in hits[:8]))
    return {
        "questions_with_gold": len(rec[8]),
        "recall@1": round(float(np.mean(rec[1])), 4),
        "recall@5": round(float(np.mean(rec[5])), 4),
        "recall@8": round(float(np.mean(rec[8])), 4),
        "answer_span_recall@8": round(float(np.mean(span_hits)), 4),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
    }


def time_rank_bm25(engine: ChronoRAG, questions: list[dict], n_queries: int = 20) -> dict:
    """bm25s vs rank_bm25 on identical tokens (the chunks' tokens and the questions' tokens)."""
    import bm25s
    from rank_bm25 import BM25Okapi

    tok = engine.bm25.tokenizer
    corpus = [tok.tokenize(c.text) for batch in engine.store.iter_chunks() for c in batch]
    queries = [tok.tokenize(q["question"]) for q in questions[:n_queries]]
    t0 = time.perf_counter()
    fast = bm25s.BM25(k1=1.5, b=0.75)
    fast.index(corpus, show_progress=False)
    fast_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    slow = BM25Okapi(corpus, k1=1.5, b=0.75)
    slow_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    for q in queries:
        fast.get_scores(q)
    fast_q = (time.perf_counter() - t0) / len(queries)
    t0 = time.perf_counter()
    for q in queries:
        slow.get_scores(q)
    slow_q = (time.perf_counter() - t0) / len(queries)
    return {
        "benchmark": "bm25s_vs_rank_bm25",
        "chunks": len(corpus),
        "index_s": {"bm25s": round(fast_index, 2), "rank_bm25": round(slow_index, 2)},
        "query_ms": {"bm25s": round(fast_q * 1000, 2), "rank_bm25": round(slow_q * 1000, 2)},
        "query_speedup": round(slow_q / fast_q, 1),
    }


def anchor(subset: set[str] | None, questions: dict[str, list[dict]]) -> list[dict]:
    """Plain bm25s + jieba over 128-character chunks: the issue's reference figure."""
    import bm25s
    import jieba

    jieba.setLogLevel(60)
    texts, owners = [], []
    for doc in load_crud(crud_dir() / "corpus.jsonl.gz"):
        if not hasattr(doc, "doc_id") or (subset is not None and doc.doc_id not in subset):
            continue
        for i in range(0, len(doc.text), 128):
            texts.append(doc.text[i : i + 128])
            owners.append(doc.doc_id)
    model = bm25s.BM25()
    model.index([jieba.lcut(t) for t in texts], show_progress=False)
    rows = []
    for name, qs in questions.items():
        rec = []
        for q in qs:
            if not q["gold"]:
                continue
            res, _ = model.retrieve([jieba.lcut(q["question"])], k=8, show_progress=False)
            docs = {owners[i] for i in res[0]}
            rec.append(len(docs & set(q["gold"])) / len(q["gold"]))
        rows.append({"benchmark": "retrieval_anchor", "set": name, "chunks": len(texts),
                     "recall@8": round(float(np.mean(rec)), 4)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--subset", type=int, default=20000, help="documents in the seeded subset")
    ap.add_argument("--full", action="store_true", help="use the whole corpus")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--embedder", default="minilm-int8")
    ap.add_argument("--bm25-chinese", choices=BM25_CHINESE, default=Settings.bm25_chinese,
                    help="Chinese BM25 terms (switching rebuilds the cached BM25 index)")
    ap.add_argument("--doc-evidence", type=float, default=Settings.doc_evidence,
                    help="BM25 document evidence weight (0 = off)")
    ap.add_argument("--max-questions", type=int, default=0, help="per set; 0 = all")
    ap.add_argument("--anchor", action="store_true")
    ap.add_argument("--no-rank-bm25", action="store_true")
    ap.add_argument("--cache", type=Path, default=REPO / ".bench-cache")
    args = ap.parse_args()

    n = 0 if args.full else args.subset
    tag = f"crud-{'full' if n == 0 else f'sub{n}-s{args.seed}'}-c{args.chunk_size}"
    settings = load_settings(env={}, data_dir=args.cache / tag, chunk_size=args.chunk_size,
                             embedder=args.embedder, workers=2, bm25_chinese=args.bm25_chinese,
                             doc_evidence=args.doc_evidence)
    engine = ChronoRAG(settings)
    subset = pick_subset(n, args.seed)
    # always ingest: over a cached store it is incremental (unchanged documents are skipped) and
    # picks up what a newer loader or chunker does differently, so figures never describe stale chunks
    build(engine, subset)
    engine.sync()
    questions = {name: load_questions(f"questions_{name}.json") for name in ("1doc", "2docs")}
    if args.max_questions:
        questions = {k: v[: args.max_questions] for k, v in questions.items()}
    docs = engine.store.counts()["documents"]
    corpus_note = "full corpus" if n == 0 else f"seeded {n}-document subset holding every gold document"
    for name, qs in questions.items():
        # hybrid = what `chronorag retrieve` does by default (every enabled retriever, vectors only
        # for questions in the embedder's languages); hybrid_no_graph shows the graph's share,
        # bm25_no_evidence what document evidence adds to BM25
        modes = (("bm25", ["bm25"], True), ("dense", ["dense"], True), ("hybrid", None, True),
                 ("hybrid_no_graph", None, False))
        if settings.doc_evidence > 0:
            modes += (("bm25_no_evidence", ["bm25"], True),)
        searchers = engine.retriever.searchers
        configured = searchers["bm25"]
        for mode, retrievers, use_graph in modes:
            if mode == "bm25_no_evidence":
                searchers["bm25"] = ByText(engine.bm25)  # the bare BM25 index under the evidence wrapper
            engine.retrieve(qs[0]["question"], retrievers=retrievers)  # warm-up: model load, page cache
            row = {"benchmark": "retrieval", "set": name, "retriever": mode, "docs": docs,
                   "corpus": corpus_note, "chunk_size": args.chunk_size, "embedder": args.embedder,
                   "bm25_chinese": args.bm25_chinese, "doc_evidence": settings.doc_evidence}
            row.update(evaluate(engine, qs, retrievers, use_graph=use_graph))
            print(json.dumps(row, ensure_ascii=False), flush=True)
        searchers["bm25"] = configured
    if not args.no_rank_bm25:
        print(json.dumps(time_rank_bm25(engine, questions["1doc"])), flush=True)
    if args.anchor:
        for row in anchor(subset, questions):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
