"""DenseIndex: add/delete/search, allowed filters, persistence, vector reuse, hnsw and ivf kinds."""

from __future__ import annotations

import json
import os
import random
from datetime import datetime, timezone

import numpy as np
import pytest
from fakes import HashingEmbedder

from chronorag.indexing import catch_up
from chronorag.retrieval.dense_index import DenseIndex, DenseIndexError, DenseParams
from chronorag.store import DocumentWrite, Store
from chronorag.types import ChunkDraft, Document

UTC = timezone.utc
VOCAB = (
    "river harbor copper lantern orchard meadow falcon glacier canyon prairie budget report "
    "market energy storm vaccine school railway bridge festival election harvest"
).split()


def _write(store: Store, docs: dict[str, list[str]]) -> None:
    writes = []
    for doc_id, texts in docs.items():
        drafts = [ChunkDraft(i, t, 0, len(t), len(t.split())) for i, t in enumerate(texts)]
        doc = Document(doc_id, "\n".join(texts), datetime(2023, 8, 1, tzinfo=UTC), source="t")
        writes.append(DocumentWrite(doc, f"h-{doc_id}-{hash(tuple(texts))}", drafts))
    store.write_documents(writes)


def _random_docs(n_docs: int, chunks_per_doc: int, seed: int = 0) -> dict[str, list[str]]:
    rng = random.Random(seed)
    return {
        f"d{d}": [" ".join(rng.choices(VOCAB, k=6)) for _ in range(chunks_per_doc)]
        for d in range(n_docs)
    }


def _brute_force(store: Store, emb: HashingEmbedder, query: str, k: int, allowed=None):
    ids = store.live_chunk_ids() if allowed is None else np.asarray(allowed)
    chunks = store.get_chunks(ids.tolist())
    ids = np.asarray([i for i in ids.tolist() if i in chunks])
    vecs = emb.encode([chunks[i].text for i in ids.tolist()])
    scores = vecs @ emb.encode_query(query)
    order = np.argsort(-scores, kind="stable")[:k]
    return ids[order], scores[order]


def _index(tmp_path, store, emb=None, kind="flat", **params):
    return DenseIndex(tmp_path / "dense", emb or HashingEmbedder(), store, kind=kind,
                      params=DenseParams(**params) if params else DenseParams())


def test_search_matches_brute_force_and_finds_topic(tmp_path, store):
    _write(store, _random_docs(20, 3))
    _write(store, {"special": ["glacier glacier canyon expedition notes", "unrelated market report"]})
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb)
    catch_up(store, index)
    assert len(index) == 62 and index.applied_seq == store.max_seq()
    ids, scores = index.search("glacier canyon expedition", k=5)
    assert ids.dtype == np.int64 and scores.dtype == np.float32
    assert ids[0] == store.doc_chunk_ids("special")[0]
    bf_ids, bf_scores = _brute_force(store, emb, "glacier canyon expedition", 5)
    np.testing.assert_allclose(scores, bf_scores, rtol=1e-5, atol=1e-6)
    assert scores[0] == pytest.approx(bf_scores[0])
    # a vector query gives the same answer as the text query
    ids2, _ = index.search(emb.encode_query("glacier canyon expedition"), k=5)
    assert ids2.tolist() == ids.tolist()


def test_delete_and_replace_leave_index_equal_to_store(tmp_path, store):
    _write(store, _random_docs(10, 4))
    index = _index(tmp_path, store)
    catch_up(store, index)
    gone = store.doc_chunk_ids("d3")
    store.delete_documents(["d3"])
    _write(store, {"d4": ["a brand new falcon text"]})  # changed: old chunks out, new one in
    catch_up(store, index)
    ids, _ = index.search("falcon river", k=1000)
    assert set(ids.tolist()) == set(store.live_chunk_ids().tolist())
    assert not set(gone) & set(ids.tolist())
    assert len(index) == store.counts()["chunks"]


def test_allowed_filter_returns_best_allowed(tmp_path, store):
    _write(store, _random_docs(30, 2))
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb)
    catch_up(store, index)
    live = store.live_chunk_ids()
    allowed = np.sort(live[::7])
    ids, scores = index.search("harbor lantern orchard", k=4, allowed=allowed)
    assert set(ids.tolist()) <= set(allowed.tolist()) and len(ids) == 4
    bf_ids, bf_scores = _brute_force(store, emb, "harbor lantern orchard", 4, allowed)
    np.testing.assert_allclose(scores, bf_scores, rtol=1e-5, atol=1e-6)
    # fewer allowed than k: all of them come back; none allowed: nothing
    few = np.sort(live[:3])
    ids, _ = index.search("harbor", k=10, allowed=few)
    assert sorted(ids.tolist()) == few.tolist()
    assert index.search("harbor", k=10, allowed=np.empty(0, np.int64))[0].size == 0


def test_persistence_round_trip_without_reembedding(tmp_path, store):
    _write(store, _random_docs(15, 3))
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb)
    catch_up(store, index)
    encoded = emb.encoded
    assert encoded == 45
    before = index.search("meadow falcon", k=10)
    reopened = _index(tmp_path, store, emb)
    assert reopened.applied_seq == index.applied_seq and len(reopened) == 45
    after = reopened.search("meadow falcon", k=10)
    assert after[0].tolist() == before[0].tolist()
    np.testing.assert_allclose(after[1], before[1])
    assert emb.encoded == encoded + 2  # only the two queries were embedded
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert manifest["embedder"] == emb.name and manifest["dim"] == emb.dim and manifest["kind"] == "flat"
    files = {p.name for p in (tmp_path / "dense").iterdir()}
    assert files == {"manifest.json", manifest["file"]}  # older generations were deleted


def test_rebuild_reuses_stored_embeddings(tmp_path, store):
    _write(store, _random_docs(12, 2))
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb)
    catch_up(store, index)
    assert emb.encoded == 24 and store.counts()["embeddings"] == 24
    before = index.search("copper bridge", k=5)[0].tolist()
    index.reset()
    assert index.applied_seq == 0 and len(index) == 0
    catch_up(store, index)
    # a fresh index in another directory (e.g. after switching kind) also embeds nothing
    other = DenseIndex(tmp_path / "other", emb, store, kind="hnsw")
    catch_up(store, other)
    assert emb.encoded == 24 + 1
    assert index.search("copper bridge", k=5)[0].tolist() == before
    # new chunks are embedded exactly once
    _write(store, {"late": ["late copper news", "late bridge news"]})
    catch_up(store, index)
    catch_up(store, other)
    assert emb.encoded == 24 + 1 + 1 + 2


def test_changed_embedder_starts_empty(tmp_path, store):
    _write(store, _random_docs(5, 2))
    index = _index(tmp_path, store)
    catch_up(store, index)

    class OtherEmbedder(HashingEmbedder):
        name = "test-hashing-other"

    emb = OtherEmbedder()
    fresh = _index(tmp_path, store, emb)
    assert fresh.applied_seq == 0 and len(fresh) == 0
    catch_up(store, fresh)
    assert len(fresh) == 10 and emb.encoded == 10


def test_interrupted_commit_keeps_previous_state(tmp_path, store, monkeypatch):
    _write(store, _random_docs(5, 2))
    index = _index(tmp_path, store)
    catch_up(store, index)
    seq = index.applied_seq
    _write(store, {"new": ["storm harvest railway"]})

    def crash(*_a, **_k):
        raise OSError("simulated crash before the manifest swap")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        catch_up(store, index)
    monkeypatch.undo()
    reopened = _index(tmp_path, store)
    assert reopened.applied_seq == seq and len(reopened) == 10
    catch_up(store, reopened)  # merely behind: catching up completes it and cleans stray files
    assert len(reopened) == 11
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    assert {p.name for p in (tmp_path / "dense").iterdir()} == {"manifest.json", manifest["file"]}


def test_corrupt_index_file_rebuilds_from_store(tmp_path, store):
    _write(store, _random_docs(4, 2))
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb)
    catch_up(store, index)
    manifest = json.loads((tmp_path / "dense" / "manifest.json").read_text())
    (tmp_path / "dense" / manifest["file"]).write_bytes(b"garbage")
    fresh = _index(tmp_path, store, emb)
    assert fresh.applied_seq == 0
    catch_up(store, fresh)
    assert len(fresh) == 8 and emb.encoded == 8


def test_bad_queries_raise_clear_errors(tmp_path, store):
    index = _index(tmp_path, store)
    assert index.search("anything", k=3)[0].size == 0  # empty index
    _write(store, _random_docs(2, 2))
    catch_up(store, index)
    with pytest.raises(DenseIndexError, match="dim"):
        index.search(np.ones(5, dtype=np.float32), k=3)
    with pytest.raises(DenseIndexError, match="k must be"):
        index.search("river", k=0)
    with pytest.raises(DenseIndexError, match="empty"):
        index.search("   ", k=3)
    with pytest.raises(DenseIndexError, match="kind"):
        DenseIndex(tmp_path / "x", HashingEmbedder(), store, kind="annoy")


def test_hnsw_tombstones_filter_then_compact(tmp_path, store):
    _write(store, _random_docs(40, 3))
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb, kind="hnsw", compact_ratio=0.9, exact_filter_limit=0)
    catch_up(store, index)
    gone = set(store.doc_chunk_ids("d1") + store.doc_chunk_ids("d2"))
    store.delete_documents(["d1", "d2"])
    catch_up(store, index)
    assert index.stats()["tombstones"] == 6 and len(index) == 114
    ids, _ = index.search("river harbor", k=1000)
    assert not gone & set(ids.tolist())
    # allowed filter through the HNSW graph (exact path disabled above)
    allowed = np.sort(store.live_chunk_ids()[::5])
    ids, scores = index.search("glacier meadow", k=5, allowed=allowed)
    bf_ids, bf_scores = _brute_force(store, emb, "glacier meadow", 5, allowed)
    assert set(ids.tolist()) <= set(allowed.tolist())
    np.testing.assert_allclose(scores, bf_scores, rtol=1e-5, atol=1e-6)
    # tombstones persist, then compact() drops them for good
    reopened = _index(tmp_path, store, emb, kind="hnsw", compact_ratio=0.9)
    assert reopened.stats()["tombstones"] == 6 and len(reopened) == 114
    reopened.compact()
    assert reopened.stats()["tombstones"] == 0 and len(reopened) == 114
    again = _index(tmp_path, store, emb, kind="hnsw")
    assert again.stats()["tombstones"] == 0
    assert set(again.search("river", k=1000)[0].tolist()) == set(store.live_chunk_ids().tolist())


def test_hnsw_compacts_itself_when_tombstones_pile_up(tmp_path, store):
    _write(store, _random_docs(10, 2))
    index = _index(tmp_path, store, kind="hnsw", compact_ratio=0.25)
    catch_up(store, index)
    store.delete_documents(["d0", "d1", "d2"])  # 6 of 20 > 25%
    catch_up(store, index)
    assert index.stats()["tombstones"] == 0 and len(index) == 14


def test_ivf_trains_once_enough_vectors_exist(tmp_path, store):
    emb = HashingEmbedder()
    index = _index(tmp_path, store, emb, kind="ivf", ivf_train_min=700, nprobe=64, exact_filter_limit=0)
    _write(store, _random_docs(100, 3, seed=1))
    catch_up(store, index)
    assert not index.trained and len(index) == 300  # still exact
    _write(store, {f"e{i}": [" ".join(random.Random(i).choices(VOCAB, k=6))] * 1 for i in range(500)})
    catch_up(store, index)
    stats = index.stats()
    assert index.trained and stats["nlist"] >= 16 and len(index) == 800
    ids, scores = index.search("orchard election", k=8)
    bf_ids, bf_scores = _brute_force(store, emb, "orchard election", 8)
    np.testing.assert_allclose(scores, bf_scores, rtol=1e-5, atol=1e-6)  # nprobe covers all lists
    gone = set(store.doc_chunk_ids("d7"))
    store.delete_documents(["d7"])
    catch_up(store, index)
    assert len(index) == 797 and not gone & set(index.search("orchard", k=1000)[0].tolist())
    allowed = np.sort(store.live_chunk_ids()[::9])
    ids, _ = index.search("festival storm", k=6, allowed=allowed)
    assert len(ids) == 6 and set(ids.tolist()) <= set(allowed.tolist())
    reopened = _index(tmp_path, store, emb, kind="ivf", ivf_train_min=700)
    assert reopened.trained and len(reopened) == 797


@pytest.mark.slow
def test_real_model_finds_the_semantic_match(tmp_path, store):
    from chronorag.retrieval.embedder import load_embedder

    _write(store, {
        "weather": ["Heavy rain and strong winds are expected across the coast tomorrow."],
        "earnings": ["The company reported quarterly revenue growth of twelve percent."],
        "sport": ["The home team won the championship final after extra time."],
    })
    index = DenseIndex(tmp_path / "dense", load_embedder("minilm-int8"), store)
    catch_up(store, index)
    ids, scores = index.search("What is the forecast for storms?", k=3)
    assert ids[0] == store.doc_chunk_ids("weather")[0] and scores[0] > scores[1]


class _Multilingual(HashingEmbedder):
    name = "test-hashing-64-multilingual"
    languages = frozenset({"en", "zh"})


def test_chunks_outside_the_embedders_languages_are_not_embedded_until_one_covers_them(tmp_path, store):
    _write(store, {"zh": ["北京市政府发布了新的交通规划，地铁线路将延长。", "上海的港口吞吐量再创新高。"],
                   "en": ["The river harbor report discussed the copper budget.", "北京 subway plan and the harbor report"]})
    english = HashingEmbedder()
    index = _index(tmp_path, store, english)
    catch_up(store, index)
    assert english.encoded == 2 and len(index) == 2  # the English chunk and the mixed one
    assert index.applied_seq == store.max_seq()  # nothing left behind: skipped, not pending
    texts = {c.chunk_id: c.text for c in store.get_chunks(store.live_chunk_ids().tolist()).values()}
    found = {texts[int(i)] for i in index.search("harbor report", k=10)[0]}
    assert found == {"The river harbor report discussed the copper budget.", "北京 subway plan and the harbor report"}
    both = _Multilingual()
    switched = _index(tmp_path, store, both)  # another model: its own vectors, every language
    catch_up(store, switched)
    assert both.encoded == 4 and len(switched) == 4
