"""Ingest N CRUD-RAG documents and print one JSON line of throughput, per-stage time, memory, disk.

    python benchmarks/ingest.py                 # 5,000 documents, BM25 + dense + temporal graph
    python benchmarks/ingest.py --all --no-dense --graph none  # whole corpus, BM25 only (<= 5 min target)
    python benchmarks/ingest.py --all --no-dense               # ... plus the graph (<= 2x slower target)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import crud_dir, dir_bytes, peak_rss_mb  # noqa: E402

from chronorag.config import BM25_CHINESE, Settings, load_settings  # noqa: E402
from chronorag.engine import ChronoRAG  # noqa: E402
from chronorag.indexing import catch_up  # noqa: E402
from chronorag.ingest.loaders import load_crud  # noqa: E402
from chronorag.ingest.pipeline import ingest_documents  # noqa: E402


def embed_missing(engine: ChronoRAG, batch: int = 4096) -> int:
    """Embed every chunk the dense index takes (its embedder's languages) that has no stored vector
    yet: the 'embed' stage, timed apart from FAISS."""
    embedder, dense = engine.embedder, engine.dense
    done = 0
    for chunks in engine.store.iter_chunks(batch):
        have = engine.store.embeddings(embedder.name, [c.chunk_id for c in chunks])
        todo = [c for c in chunks if c.chunk_id not in have and dense.covers(c.text)]
        if todo:
            vecs = embedder.encode([c.text for c in todo])
            engine.store.put_embeddings(embedder.name, {c.chunk_id: v for c, v in zip(todo, vecs)})
            done += len(todo)
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--all", action="store_true", help="all 68,798 documents")
    ap.add_argument("--no-dense", action="store_true")
    ap.add_argument("--graph", choices=["rule", "none"], default="rule", help="temporal graph extractor")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=256)
    ap.add_argument("--bm25-chinese", choices=BM25_CHINESE, default=Settings.bm25_chinese)
    ap.add_argument("--data-dir", type=Path, help="keep the index here (default: a temp dir, removed)")
    args = ap.parse_args()

    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="chronorag-bench-"))
    settings = load_settings(
        env={}, data_dir=data_dir, workers=args.workers, chunk_size=args.chunk_size,
        embedder="none" if args.no_dense else None, graph=args.graph, bm25_chinese=args.bm25_chinese,
    )
    engine = ChronoRAG(settings)
    records = load_crud(crud_dir() / "corpus.jsonl.gz")
    if not args.all:
        records = islice(records, args.n)
    t_start = time.perf_counter()
    report = ingest_documents(
        engine.store, records, chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap,
        batch_size=settings.ingest_batch, workers=settings.workers,
    )
    stages = dict(report.stage_seconds)
    t0 = time.perf_counter()
    catch_up(engine.store, engine.bm25)
    stages["bm25"] = time.perf_counter() - t0
    graph_info = {}
    if engine.graph is not None:
        t0 = time.perf_counter()
        catch_up(engine.store, engine.graph)
        stages["graph"] = time.perf_counter() - t0
        stages["graph_extract"] = engine.graph.extract_seconds  # part of "graph": extraction (workers)
        graph_info = {k: v for k, v in engine.graph.stats().items() if isinstance(v, (int, float))}
    if not args.no_dense:
        t0 = time.perf_counter()
        embed_missing(engine)
        stages["embed"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        catch_up(engine.store, engine.dense)
        stages["faiss"] = time.perf_counter() - t0
    total = time.perf_counter() - t_start
    counts = engine.store.counts()
    engine.close()
    out = {
        "benchmark": "ingest",
        "docs": report.documents,
        "failed": report.failed,
        "chunks": counts["chunks"],
        "chunk_size": settings.chunk_size,
        "bm25_chinese": settings.bm25_chinese,
        "workers": settings.workers,
        "dense": not args.no_dense,
        "graph": args.graph,
        "graph_stats": graph_info,
        "seconds": round(total, 2),
        "docs_per_s": round(report.documents / total, 1),
        "chunks_per_s": round(counts["chunks"] / total, 1),
        "stage_seconds": {k: round(v, 2) for k, v in stages.items()},
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "disk_bytes": dir_bytes(data_dir),
    }
    print(json.dumps(out))
    if args.data_dir is None:
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
