import numpy as np
import pytest

from chronorag.config import ConfigError, load_settings
from chronorag.engine import ChronoRAG
from chronorag.retrieval.doc_evidence import DocumentEvidenceSearcher, add_document_evidence
from chronorag.types import Document


def test_a_documents_best_chunk_carries_its_siblings_evidence():
    ids = np.array([10, 20, 21, 22])
    scores = np.array([5.0, 4.5, 1.0, 1.0])
    out_ids, out_scores = add_document_evidence(ids, scores, ["A", "B", "B", "B"], weight=0.5)
    # B's best chunk: 4.5 + 0.5 * (1 + 1) = 5.5 passes A's lone 5.0; B's other chunks keep theirs
    assert out_ids.tolist() == [20, 10, 21, 22]
    assert out_scores.tolist() == [5.5, 5.0, 1.0, 1.0]


def test_only_the_best_few_siblings_count():
    ids = np.arange(6)
    scores = np.array([3.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    docs = ["long"] * 5 + ["other"]
    _, capped = add_document_evidence(ids, scores, docs, weight=1.0, siblings=2)
    assert capped[0] == 3.0 + 2.0 + 1.0
    _, wide = add_document_evidence(ids, scores, docs, weight=1.0, siblings=10)
    assert wide[0] == 3.0 + 2.0 + 1.0 + 1.0 + 1.0


def test_candidates_need_not_arrive_sorted_and_ties_keep_their_order():
    ids = np.array([1, 2, 3, 4])
    scores = np.array([1.0, 2.0, 2.0, 0.5])
    out_ids, out_scores = add_document_evidence(ids, scores, ["A", "A", "B", "C"], weight=0.5)
    # A's best is id 2 (2.0 + 0.5 * 1.0); the equal-scored 3 and the lone 4 keep their order
    assert out_ids.tolist() == [2, 3, 1, 4] and out_scores.tolist() == [2.5, 2.0, 1.0, 0.5]


def test_weight_zero_and_empty_input_change_nothing_and_bad_input_is_refused():
    ids, scores = np.array([3, 1, 2]), np.array([1.0, 3.0, 2.0])
    same_ids, same_scores = add_document_evidence(ids, scores, ["A", "A", "A"], weight=0.0)
    assert same_ids.tolist() == [3, 1, 2] and same_scores.tolist() == [1.0, 3.0, 2.0]
    empty_ids, _ = add_document_evidence(np.array([], dtype=np.int64), np.array([]), [], weight=0.3)
    assert empty_ids.size == 0
    with pytest.raises(ValueError, match="same length"):
        add_document_evidence(ids, scores, ["A"], weight=0.3)
    with pytest.raises(ValueError, match="siblings"):
        add_document_evidence(ids, scores, ["A", "B", "C"], weight=0.3, siblings=0)


class _Fixed:
    def __init__(self, ids, scores):
        self.ids, self.scores, self.calls = np.array(ids), np.array(scores, dtype=float), []

    def search(self, query, k, allowed=None):
        self.calls.append((query, k, allowed))
        return self.ids[:k], self.scores[:k]


def test_searcher_reads_deeper_than_k_and_unknown_chunks_stand_alone():
    inner = _Fixed([1, 2, 3, 4, 5], [5.0, 4.0, 3.0, 2.0, 2.0])
    docs = {1: "A", 2: "B", 4: "B", 5: "B"}  # chunk 3 is unknown to the store: its own document
    searcher = DocumentEvidenceSearcher(inner, lambda ids: {i: docs[i] for i in ids if i in docs},
                                        weight=0.5, depth=5)
    allowed = np.array([1, 2, 3, 4, 5])
    ids, scores = searcher.search("q", 2, allowed)
    assert inner.calls == [("q", 5, allowed)]  # evidence needs candidates beyond the k returned
    assert ids.tolist() == [2, 1] and scores.tolist() == [6.0, 5.0]
    with pytest.raises(ValueError, match="weight"):
        DocumentEvidenceSearcher(inner, dict, weight=-1.0, depth=5)
    with pytest.raises(ValueError, match="depth"):
        DocumentEvidenceSearcher(inner, dict, weight=0.5, depth=0)


def test_store_maps_live_and_retired_chunks_to_their_documents(store):
    from test_store import _doc, _write

    _write(store, _doc("a"), "h")
    _write(store, _doc("b"), "h", n_chunks=1)
    a_ids, b_ids = store.doc_chunk_ids("a"), store.doc_chunk_ids("b")
    store.delete_documents(["a"])  # retired: an index that has not caught up may still list them
    assert store.doc_ids_of(a_ids + b_ids + [999]) == {a_ids[0]: "a", a_ids[1]: "a", b_ids[0]: "b"}


def _ranked(tmp_path, weight):
    # 'feature' is one article whose body mentions the turbine maker in every paragraph; 'brief'
    # names it twice in one short note, so its single chunk scores best on its own
    para = "Windwerk turbine orders grew in the northern plant. " + "Staff and suppliers met weekly. " * 6
    docs = [Document("feature", "\n\n".join([para] * 4)),
            Document("brief", "Windwerk turbine Windwerk turbine notes."),
            Document("other", "Harbor cranes moved containers all week. " * 5)]
    settings = load_settings(env={}, data_dir=tmp_path / f"w{weight}", embedder="none", graph="none",
                             chunk_size=32, chunk_overlap=0, doc_evidence=weight)
    with ChronoRAG(settings) as rag:
        rag.insert(docs)
        return [h.doc_id for h in rag.retrieve("Windwerk turbine orders", top_k=3)]


def test_engine_ranks_the_article_with_more_matching_chunks_first(tmp_path):
    assert _ranked(tmp_path, 0.0) == ["brief", "feature", "feature"]
    # the article's best chunk moves up; its other chunks keep their own place below the brief
    assert _ranked(tmp_path, 0.3) == ["feature", "brief", "feature"]


@pytest.mark.parametrize("env, message", [
    ({"CHRONORAG_DOC_EVIDENCE": "1.5"}, "doc_evidence must be in \\[0, 1\\]"),
    ({"CHRONORAG_DOC_EVIDENCE": "-0.1"}, "doc_evidence must be in \\[0, 1\\]"),
    ({"CHRONORAG_DOC_EVIDENCE_DEPTH": "0"}, "doc_evidence_depth must be >= 1"),
])
def test_bad_document_evidence_settings(tmp_path, monkeypatch, env, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env)
