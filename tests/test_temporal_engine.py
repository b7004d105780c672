"""End to end through the engine: time-scoped questions get evidence from the asked time."""

import sys
from pathlib import Path

import pytest
from fakes import HashingEmbedder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from temporal_corpus import generate  # noqa: E402

from chronorag.config import load_settings  # noqa: E402
from chronorag.engine import ChronoRAG  # noqa: E402


@pytest.fixture(scope="module")
def corpus_rag(tmp_path_factory):
    docs, questions = generate(seed=3, n_docs=120)
    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path_factory.mktemp("t")), embedder=HashingEmbedder())
    rag.insert(docs)
    yield rag, questions
    rag.close()


def _top1_rate(rag, questions, **kw):
    ok = [rag.retrieve(q.text, top_k=5, **kw)[0].doc_id in q.gold_doc_ids for q in questions]
    return sum(ok) / len(ok)


def test_graph_makes_time_scoped_questions_time_correct(corpus_rag):
    rag, questions = corpus_rag
    with_graph = _top1_rate(rag, questions)
    without = _top1_rate(rag, questions, use_graph=False)
    assert with_graph >= 0.85
    assert with_graph > without + 0.2


@pytest.mark.parametrize("kind", ["point", "before", "after", "as_of", "latest"])
def test_each_question_kind(corpus_rag, kind):
    rag, questions = corpus_rag
    subset = [q for q in questions if q.kind == kind]
    assert subset and _top1_rate(rag, subset) >= 0.75


def test_title_header_on_chunks(tmp_path):
    from datetime import datetime, timezone

    from chronorag.types import Document

    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path, graph="none"), embedder=HashingEmbedder())
    body = "Gross margin was 53.3 percent. " * 5
    rag.insert([Document("x", body, datetime(2024, 5, 7, tzinfo=timezone.utc), title="Crocs Q1 2024 call")])
    chunk = rag.store.get_chunks(rag.store.doc_chunk_ids("x"))[rag.store.doc_chunk_ids("x")[0]]
    assert chunk.text.startswith("Crocs Q1 2024 call\n")
    assert chunk.text.endswith(body[chunk.char_start:chunk.char_end])
    assert rag.retrieve("Crocs margin", top_k=1, retrievers=["bm25"])[0].doc_id == "x"
    rag.close()


def test_period_question_finds_reports_published_after_the_period(tmp_path):
    """An earnings call about the fourth quarter happens in January: the graph's candidates for a
    question about that quarter include it, and not a mention published long after."""
    from datetime import datetime, timezone

    from chronorag.types import Document

    def day(y, m, d):
        return datetime(y, m, d, tzinfo=timezone.utc)

    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path), embedder=HashingEmbedder())
    rag.insert([
        Document("q3-call", "Acme Robotics held its quarterly call. Acme Robotics said orders were steady.", day(2024, 10, 24)),
        Document("q4-call", "Acme Robotics held its quarterly call. Acme Robotics said orders were strong.", day(2025, 1, 30)),
        Document("later", "Acme Robotics opened a new office in Lyon.", day(2025, 9, 1)),
    ])
    hits = rag.retrieve("How did Acme Robotics do in the fourth quarter of 2024?", top_k=8, retrievers=["graph"])
    docs = {h.doc_id for h in hits}
    assert "q4-call" in docs and "later" not in docs
    rag.close()


def test_graph_gets_no_extra_weight_without_a_known_entity(tmp_path):
    """A time + relation question ("what revenue ... in 2021") whose subject the graph does not know
    gets the period's headline chunks from the graph: they are fused at plain weight, not boosted
    like time-valid facts of a known entity (on CRUD-RAG the boost pushed BM25's best match out)."""
    from chronorag.ingest.loaders import load_jsonl
    from chronorag.types import Document

    samples = Path(__file__).resolve().parents[1] / "chronorag" / "samples" / "sample_news.jsonl"
    rag = ChronoRAG(load_settings(env={}, data_dir=tmp_path), embedder=HashingEmbedder())
    docs = [d for d in load_jsonl(samples) if isinstance(d, Document)]
    from datetime import datetime, timezone

    docs.append(Document("coffee", "the small coffee chain on the quay took in revenue of 3 million in the spring.",
                         datetime(2021, 6, 2, tzinfo=timezone.utc)))
    rag.insert(docs)
    question = "What revenue did the coffee chain on the quay take in during 2021?"
    query = rag.analyse(question)
    reading = query.graph
    assert reading.relations == ("revenue",) and query.scope.mode == "in" and not query.entities
    assert query.kind == "period" and query.weights == {"graph": rag.settings.graph_mention_weight}
    assert rag.graph.retrieve(query).candidates  # the graph does answer, from the period
    known = rag.analyse("What revenue did Northwind Energy report in 2021?")
    assert known.graph.relation_evidence and known.relation == "revenue"
    assert known.weights == {"graph": rag.settings.graph_time_weight}
    # a known entity and relation, but no such fact holds at the asked time: the weak weight too
    for question in ("What revenue did Northwind Energy report in 2010?", "Who led Bluewater Utilities in 2010?"):
        query = rag.analyse(question)
        assert query.entities and query.graph.relations and query.scope.mode == "in"
        assert not query.graph.relation_evidence and query.relation is None
        assert query.weights == {"graph": rag.settings.graph_mention_weight}
    rag.close()
