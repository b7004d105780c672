"""Time-correct retrieval: BM25-only vs hybrid (BM25 + dense) vs hybrid + temporal graph, side by side.

(1) A seeded synthetic corpus whose facts change over time (benchmarks/temporal_corpus.py):
    top-1 time-correct rate and top-5 "clean" rate (a gold document in the top 5 and no document
    that states the same kind of fact for the same entity at another time).
(2) ECT-QA 2024 earnings calls: evidence-document recall@8 and the share of answerable questions
    with every evidence document in the top 8 — counted over the documents of the top-8 chunks, and
    over the first 8 distinct documents of the ranking.

    python benchmarks/temporal.py            # both datasets, one JSON line per (dataset, mode)
    python benchmarks/temporal.py --only synthetic
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import datasets_dir  # noqa: E402
from temporal_corpus import generate  # noqa: E402

from chronorag.config import Settings, load_settings  # noqa: E402
from chronorag.engine import ChronoRAG  # noqa: E402
from chronorag.ingest.loaders import load_ect  # noqa: E402
from chronorag.types import Document, LoadError  # noqa: E402

MODES = {"bm25": dict(retrievers=["bm25"]), "hybrid": dict(retrievers=["bm25", "dense"]),
         "hybrid+graph": dict(retrievers=["bm25", "dense", "graph"])}


def _topic(text: str) -> str:
    t = text.lower()
    if "headquarter" in t or "based" in t:
        return "hq"
    if re.search(r"revenue|take in|sales|earn|bring in|\$", t):
        return "revenue"
    return "ceo"


def synthetic(seed: int, n_docs: int, embedder: str, doc_evidence: float) -> list[dict]:
    docs, questions = generate(seed=seed, n_docs=n_docs)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        rag = ChronoRAG(load_settings(env={}, data_dir=tmp, embedder=embedder, doc_evidence=doc_evidence))
        rag.insert(docs)
        for mode, kw in MODES.items():
            top1, clean, lat = [], [], []
            for q in questions:
                wrong = set()
                for other in questions:
                    if (other.entity == q.entity and _topic(other.text) == _topic(q.text)
                            and not other.gold_doc_ids & q.gold_doc_ids):
                        wrong |= other.gold_doc_ids
                t0 = time.perf_counter()
                hits = rag.retrieve(q.text, top_k=5, **kw)
                lat.append((time.perf_counter() - t0) * 1000)
                ids = [h.doc_id for h in hits]
                top1.append(bool(ids) and ids[0] in q.gold_doc_ids)
                clean.append(bool(set(ids) & q.gold_doc_ids) and not set(ids) & wrong)
            rows.append({"benchmark": "temporal", "dataset": f"synthetic(seed={seed},docs={len(docs)})",
                         "mode": mode, "questions": len(questions),
                         "doc_evidence": doc_evidence, "top1_time_correct": round(float(np.mean(top1)), 4),
                         "top5_clean": round(float(np.mean(clean)), 4),
                         "p50_ms": round(float(np.percentile(lat, 50)), 1)})
        rag.close()
    return rows


def ect_documents(path: Path) -> list[Document]:
    """The transcripts as ``chronorag ingest --format ect`` loads them (same ids, dates and titles),
    so the figures describe what a user's store holds; a record that does not load stops the run."""
    docs, errors = [], []
    for record in load_ect(path):
        (errors if isinstance(record, LoadError) else docs).append(record)
    if errors:
        raise SystemExit(f"{len(errors)} ECT-QA records did not load, first: {errors[0]}")
    return docs


def ect(embedder: str, cache: Path, doc_evidence: float) -> list[dict]:
    base = datasets_dir() / "ect_qa"
    docs = ect_documents(base / "corpus_2024.jsonl.gz")
    questions = []
    for line in open(base / "questions_2024.jsonl", encoding="utf-8"):
        q = json.loads(line)
        gold = {e["ect_filename"].removesuffix(".json") for e in q.get("evidence_list") or []}
        if q["answer"] != "unanswerable" and gold:
            questions.append((q["question"], gold))
    rows = []
    # the index (with its embeddings) is kept between runs; re-ingesting is a no-op
    rag = ChronoRAG(load_settings(env={}, data_dir=cache / f"ect2024-{embedder}", embedder=embedder,
                                  doc_evidence=doc_evidence))
    rag.insert(docs)
    for mode, kw in MODES.items():
        r_chunk, all_chunk, r_doc, all_doc = [], [], [], []
        for text, gold in questions:
            hits = rag.retrieve(text, top_k=64, **kw)
            top8 = {h.doc_id for h in hits[:8]}
            distinct = list(dict.fromkeys(h.doc_id for h in hits))[:8]
            r_chunk.append(len(top8 & gold) / len(gold))
            all_chunk.append(gold <= top8)
            r_doc.append(len(set(distinct) & gold) / len(gold))
            all_doc.append(gold <= set(distinct))
        rows.append({"benchmark": "temporal", "dataset": "ect_qa_2024", "mode": mode,
                     "questions": len(questions), "docs": len(docs), "doc_evidence": doc_evidence,
                     "recall@8_top8_chunks": round(float(np.mean(r_chunk)), 4),
                     "all_in_top8_chunks": round(float(np.mean(all_chunk)), 4),
                     "recall@8_distinct_docs": round(float(np.mean(r_doc)), 4),
                     "all_in_top8_distinct_docs": round(float(np.mean(all_doc)), 4)})
    rag.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", choices=["synthetic", "ect"])
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--docs", type=int, default=300)
    ap.add_argument("--embedder", default="minilm-int8")
    ap.add_argument("--doc-evidence", type=float, default=Settings.doc_evidence,
                    help="BM25 document evidence weight (0 = off)")
    ap.add_argument("--cache", type=Path, default=Path(__file__).resolve().parents[1] / ".bench-cache")
    args = ap.parse_args()
    if args.only in (None, "synthetic"):
        for row in synthetic(args.seed, args.docs, args.embedder, args.doc_evidence):
            print(json.dumps(row), flush=True)
    if args.only in (None, "ect"):
        for row in ect(args.embedder, args.cache, args.doc_evidence):
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
