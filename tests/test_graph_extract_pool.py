"""Rule extraction in forked workers gives exactly the serial result; stateful extractors stay serial."""

from __future__ import annotations

from datetime import datetime, timezone

from chronorag.graph.extract import Extraction, RuleExtractor, extract_chunks
from chronorag.types import Chunk

TEXTS = [
    "2023年8月11日，华为公司在深圳举行发布会，余承东宣布新款手机将于9月上市。",
    "Northwind Energy said on Tuesday that Helen Marsh became chief executive of Northwind Energy.",
    "国家统计局7月15日发布数据显示，上半年国内生产总值同比增长5.5%。",
    "Acme Corp is headquartered in Denver. Revenue was $4.2 billion in Q3 2020.",
]


def _chunks(n: int) -> list[Chunk]:
    day = datetime(2023, 8, 11, tzinfo=timezone.utc)
    return [Chunk(i, f"d{i}", 0, TEXTS[i % len(TEXTS)] + f" ({i})", 0, 10, 40, day, "test") for i in range(1, n + 1)]


def test_parallel_rule_extraction_equals_serial():
    chunks = _chunks(300)
    serial = extract_chunks(RuleExtractor(), chunks, workers=1)
    parallel = extract_chunks(RuleExtractor(), chunks, workers=2)
    assert parallel == serial and len(serial) == 300
    assert any(e.facts for e in serial.values()) and any(e.entities for e in serial.values())


def test_finish_runs_on_each_extraction_in_both_paths():
    from chronorag.graph.index import _table_rows

    chunks = _chunks(300)
    serial = extract_chunks(RuleExtractor(), chunks, workers=1, finish=_table_rows)
    parallel = extract_chunks(RuleExtractor(), chunks, workers=2, finish=_table_rows)
    assert parallel == serial
    head, mentions, facts = serial[1]
    assert head[:3] == (1, "d1", "2023-08-11T00:00:00+00:00") and head[3].startswith("Northwind Energy said")
    assert mentions and all(m[0] == 1 for m in mentions) and all(f[0] == 1 for f in facts)


class _Counting:
    """An extractor with state in this process (like an LLM client): must never be forked."""

    name = "counting-v1"

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, text, published_at):
        self.calls += 1
        return Extraction()


def test_extractors_without_parallel_flag_run_in_process():
    ext = _Counting()
    out = extract_chunks(ext, _chunks(300), workers=2)
    assert ext.calls == 300 and len(out) == 300


def test_rjieba_and_jieba_taggers_extract_the_same(monkeypatch):
    import sys

    chunks = _chunks(8)
    fast = extract_chunks(RuleExtractor(), chunks)
    monkeypatch.setitem(sys.modules, "rjieba", None)  # import fails -> jieba.posseg fallback
    slow_ext = RuleExtractor()
    slow = extract_chunks(slow_ext, chunks)
    assert slow_ext._tagger.__name__ == "_tag_jieba"
    assert fast == slow


def test_chinese_organisation_names_are_contiguous_text():
    text = "青海银行前十大股东为：苏州市相城区江南化纤集团有限公司（持股4.52%）、青海盐湖工业股份有限公司（持股4.11%）。"
    ents = RuleExtractor().extract(text, None).entities
    orgs = [e.name for e in ents if e.type == "ORG"]
    # a merged name once skipped the nouns in between ('相城区集团', '盐湖有限公司')
    assert "相城区江南化纤集团" in orgs and "盐湖工业股份有限公司" in orgs
    assert all(text[e.start : e.end] == e.name for e in ents)


def test_graph_catch_up_with_prefetching_workers_equals_serial(tmp_path, monkeypatch):
    """Windows extracted ahead in the worker pool while the previous one commits give the same
    tables as one process (windows of 300, 300 and 100 chunks: forked once, pooled, in-process)."""
    import sys
    from pathlib import Path

    from chronorag.graph import facts_store as fs
    from chronorag.graph.index import GraphIndex
    from chronorag.indexing import catch_up
    from chronorag.store import DocumentWrite, Store
    from chronorag.types import ChunkDraft

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.temporal_corpus import generate

    from chronorag.graph import extract_pool

    submitted = []
    real_submit = extract_pool.ExtractionPool.submit
    monkeypatch.setattr(extract_pool.ExtractionPool, "submit",
                        lambda self, chunks: submitted.append(len(chunks)) or real_submit(self, chunks))
    docs, _ = generate(seed=5, n_docs=700)
    tables = []
    for workers in (1, 2):
        store = Store(tmp_path / f"w{workers}.sqlite3")
        store.write_documents([DocumentWrite(d, d.doc_id, [ChunkDraft(0, d.text, 0, len(d.text), 9)]) for d in docs])
        index = GraphIndex(store, workers=workers)
        catch_up(store, index, batch=300)
        assert index._pool is None  # the workers are gone once the catch-up ends
        chunks, mentions, facts = fs.all_rows(store)
        tables.append(([c[:4] for c in chunks], sorted(mentions), sorted(facts), fs.read_summaries(store).keys(),
                       index.graph.stats()))
        store.close()
    assert submitted == [300, 300]  # the first window in a one-shot pool, the second prefetched
    assert tables[0] == tables[1]
    assert len(tables[0][0]) == 700 and len(tables[0][2]) > 100
