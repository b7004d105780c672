"""Reads never do unbounded index work: a read applies a backlog of about a second's work and
otherwise answers from what the indexes hold, saying which are behind; writers and
``chronorag sync`` catch them up."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from fakes import HashingEmbedder

from chronorag.cli import main
from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.retrieval.dense_index import DenseIndex
from chronorag.types import Document

UTC = timezone.utc
WORDS = "river harbor copper lantern orchard meadow falcon glacier canyon prairie".split()


def _docs(n: int) -> list[Document]:
    return [Document(f"doc-{i}", f"The {WORDS[i % 10]} report number {i}. Officials discussed the "
                     f"{WORDS[i % 10]} budget at length.", datetime(2021, 1, 1, tzinfo=UTC) + timedelta(days=i))
            for i in range(n)]


def _settings(tmp_path, **kw):
    return load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8, **kw)


@pytest.fixture
def vectorless(tmp_path):
    """A store ingested without vectors, larger than a read may embed."""
    with ChronoRAG(_settings(tmp_path, embedder="none")) as rag:
        rag.insert(_docs(DenseIndex.read_backlog + 36))
    return tmp_path


def test_a_read_on_a_vectorless_store_answers_from_bm25_and_says_vectors_are_behind(vectorless):
    embedder = HashingEmbedder()
    with ChronoRAG(_settings(vectorless), embedder=embedder) as rag:
        hits = rag.retrieve("glacier budget", top_k=3)
        assert hits and hits[0].doc_id.startswith("doc-") and "glacier" in hits[0].text
        assert set(hits[0].scores) == {"bm25"}
        chunks = rag.store.counts()["chunks"]
        assert hits.stale == {"dense": chunks}
        assert embedder.encoded == 0  # neither the chunks nor even the question were embedded
        assert rag.stats().stale == {"dense": chunks}
        result = rag.sync()
        assert result.applied["dense"] == chunks and embedder.encoded == chunks and result.stale == {}
        hits = rag.retrieve("glacier budget", top_k=3)
        assert hits.stale == {} and "dense" in hits[0].scores


def test_a_small_backlog_is_applied_by_the_read_itself(tmp_path):
    embedder = HashingEmbedder()
    with ChronoRAG(_settings(tmp_path, embedder="none")) as rag:
        rag.insert(_docs(5))
    with ChronoRAG(_settings(tmp_path), embedder=embedder) as rag:
        hits = rag.retrieve("glacier budget", top_k=3)
        assert hits.stale == {} and "dense" in hits[0].scores
        assert embedder.encoded == rag.store.counts()["chunks"] + 1  # the chunks, then the question


def test_a_read_leaves_a_backlog_to_the_writer_that_holds_the_lock(tmp_path):
    with ChronoRAG(_settings(tmp_path), embedder=HashingEmbedder()) as rag:
        rag.insert(_docs(3))
        from chronorag.ingest.pipeline import ingest_documents

        # another writer committed documents and has not caught the indexes up yet

        ingest_documents(rag.store, _docs(6)[3:], chunk_size=64, chunk_overlap=8)
        with rag.data_dir.write_lock():
            with ChronoRAG(_settings(tmp_path), embedder=HashingEmbedder()) as reader:
                hits = reader.retrieve("glacier budget", top_k=3)
                assert set(hits.stale) == {"bm25", "dense", "graph"} and all(n > 0 for n in hits.stale.values())
        hits = rag.retrieve("glacier budget", top_k=3)
        assert hits.stale == {}  # the lock is free again: the small backlog is applied on the way


@pytest.fixture
def cli_env(vectorless, monkeypatch):
    monkeypatch.setenv("CHRONORAG_DATA_DIR", str(vectorless / "data"))
    monkeypatch.setenv("CHRONORAG_EMBEDDER", "minilm-int8")
    monkeypatch.setattr("chronorag.retrieval.embedder.load_embedder", lambda name="": HashingEmbedder())
    return vectorless


def test_cli_reports_stale_indexes_in_json_and_as_one_warning_line(cli_env, capsys):
    assert main(["retrieve", "glacier budget", "--top-k", "2", "--json"]) == 0
    out, err = capsys.readouterr()
    stale = json.loads(out)["stale"]
    assert set(stale) == {"dense"} and stale["dense"] > 0
    assert main(["retrieve", "glacier budget", "--top-k", "2"]) == 0
    out, err = capsys.readouterr()
    warnings = [line for line in err.splitlines() if "behind" in line]
    assert len(warnings) == 1 and "dense" in warnings[0] and "chronorag sync" in warnings[0]
    assert main(["sync"]) == 0
    out, err = capsys.readouterr()
    assert "synced: dense" in out and "sync dense" in err  # the progress bar
    assert main(["retrieve", "glacier budget", "--top-k", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr()[0])["stale"] == {}
    assert main(["sync", "--json"]) == 0
    synced = json.loads(capsys.readouterr()[0])
    assert synced["applied"] == {"bm25": 0, "dense": 0, "graph": 0} and synced["stale"] == {}


def test_a_document_half_way_through_the_indexes_is_visible_through_none(tmp_path):
    """A writer has applied new chunks to BM25 but not yet to vectors and the graph: a reader does
    not see them through BM25 alone; once every index has them, it sees them."""
    from chronorag.indexing import catch_up
    from chronorag.ingest.pipeline import ingest_documents

    with ChronoRAG(_settings(tmp_path), embedder=HashingEmbedder()) as rag:
        rag.insert(_docs(3))
        ingest_documents(rag.store, [Document("late", "The lighthouse keeper's budget report.",
                                              datetime(2022, 1, 1, tzinfo=UTC))], chunk_size=64, chunk_overlap=8)
        with rag.data_dir.write_lock():  # the writer is still at work
            catch_up(rag.store, rag.bm25)
            assert rag.bm25.search("lighthouse keeper", 5)[0].size  # BM25 holds it already
            hits = rag.retrieve("lighthouse keeper budget", top_k=5)
            assert "late" not in {h.doc_id for h in hits}
            assert set(hits.stale) == {"dense", "graph"}
            bm25_only = rag.retrieve("lighthouse keeper budget", top_k=5, retrievers=["bm25"])
            assert bm25_only[0].doc_id == "late"  # asked of BM25 alone, BM25's view is whole
        hits = rag.retrieve("lighthouse keeper budget", top_k=5)
        assert hits[0].doc_id == "late" and hits.stale == {}
