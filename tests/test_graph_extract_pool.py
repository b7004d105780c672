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
