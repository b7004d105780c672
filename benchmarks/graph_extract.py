"""Throughput of the default (rule-based) graph extractor on CRUD-RAG news, and the graph it builds.

    .venv/bin/python benchmarks/graph_extract.py --docs 2000            # extraction only
    .venv/bin/python benchmarks/graph_extract.py --docs 2000 --index    # through Store + GraphIndex

Single process. Document text is the part after '正文：'.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import crud_dir, peak_rss_mb  # noqa: E402

from chronorag.graph.extract import RuleExtractor  # noqa: E402

SHANGHAI = timezone(timedelta(hours=8))
_HEAD = re.compile(r"(\d{4})\D{1,3}(\d{1,2})\D{1,3}(\d{1,2})")


def load(n: int) -> list[tuple[str, str, datetime | None]]:
    docs = []
    with gzip.open(crud_dir() / "corpus.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            head, _, body = rec["text"].partition("正文：")
            m = _HEAD.search(head)
            when = None
            if m:
                try:
                    when = datetime(int(m.group(1)), int(m.group(2)), int(m.group(3)), tzinfo=SHANGHAI)
                except ValueError:
                    when = None
            docs.append((rec["id"], body or rec["text"], when))
            if len(docs) >= n:
                break
    return docs


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--index", action="store_true", help="also ingest through Store + GraphIndex")
    args = ap.parse_args()
    docs = load(args.docs)
    chars = sum(len(t) for _, t, _ in docs)
    ex = RuleExtractor()
    ex.extract("预热。", None)
    ex.warm_up()  # load the segmenter's dictionary outside the timing
    t0, c0 = time.perf_counter(), time.process_time()
    n_ent = n_fact = n_date = 0
    for _, text, when in docs:
        e = ex.extract(text, when)
        n_ent += len(e.entities)
        n_fact += len(e.facts)
        n_date += len(e.dates)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "docs": len(docs), "avg_chars": round(chars / len(docs)), "seconds": round(dt, 2),
        "docs_per_s": round(len(docs) / dt, 1), "chars_per_s": round(chars / dt),
        # CPU time is the fair single-core figure when other jobs share the machine
        "cpu_seconds": round(cpu, 2), "docs_per_cpu_s": round(len(docs) / cpu, 1),
        "entity_mentions": n_ent, "facts": n_fact, "dates": n_date,
    }
    if args.index:
        from chronorag.graph.index import GraphIndex
        from chronorag.indexing import catch_up
        from chronorag.store import DocumentWrite, Store
        from chronorag.types import ChunkDraft, Document

        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "store.sqlite3")
            writes = [
                DocumentWrite(Document(i, t, w), str(hash((i, t))), [ChunkDraft(0, t, 0, len(t), len(t))])
                for i, t, w in docs
            ]
            for s in range(0, len(writes), 512):
                store.write_documents(writes[s : s + 512])
            index = GraphIndex(store)
            t0, c0 = time.perf_counter(), time.process_time()
            catch_up(store, index, batch=2000)
            out["index_cpu_seconds"] = round(time.process_time() - c0, 2)
            out["index_docs_per_cpu_s"] = round(len(docs) / out["index_cpu_seconds"], 1)
            out["index_seconds"] = round(time.perf_counter() - t0, 2)
            out["index_docs_per_s"] = round(len(docs) / out["index_seconds"], 1)
            out["extract_seconds"] = round(index.extract_seconds, 2)
            t0 = time.perf_counter()
            rebuilt = index.rebuild_from_tables()
            out["rebuild_seconds"] = round(time.perf_counter() - t0, 2)
            out["graph"] = rebuilt.stats()
            # one-shot queries (CLI) read partial subgraphs from the tables, no full load
            top_entity = max(rebuilt.entities.values(), key=lambda e: len(rebuilt.entity_facts.get(e.key, ())))
            fresh = GraphIndex(store)
            timings = {}
            for label, call in (
                (f"entity_timeline({top_entity.name})", lambda: fresh.entity_timeline(top_entity.name)),
                ("period_summary(2023-08-11)", lambda: fresh.period_summary("2023-08-11")),
                ("period_summary(2023-08)", lambda: fresh.period_summary("2023-08")),
                (f"retrieve('{top_entity.name}2023年8月做了什么？')", lambda: fresh.retrieve(f"{top_entity.name}2023年8月做了什么？")),
            ):
                t0 = time.perf_counter()
                call()
                timings[label] = round(time.perf_counter() - t0, 3)
            out["partial_query_seconds"] = timings
            out["db_bytes"] = sum(p.stat().st_size for p in Path(tmp).iterdir())
            store.close()
    out["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(out, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
