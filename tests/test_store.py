from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from chronorag.indexing import DerivedIndex, catch_up, net_changes
from chronorag.store import Change, DocumentWrite
from chronorag.types import ChunkDraft, Document, SearchFilters

UTC = timezone.utc


def _doc(doc_id, text="alpha beta", day=1, source="s"):
    return Document(doc_id, text, datetime(2023, 8, day, tzinfo=UTC), title=None, source=source)


def _write(store, doc, h, n_chunks=2):
    drafts = [ChunkDraft(i, f"{doc.text} {i}", 0, len(doc.text), 3) for i in range(n_chunks)]
    return store.write_documents([DocumentWrite(doc, h, drafts)])


def test_new_unchanged_changed(store):
    assert _write(store, _doc("a"), "h1") == {"a": "new"}
    assert _write(store, _doc("a"), "h1") == {"a": "unchanged"}
    old = store.doc_chunk_ids("a")
    assert _write(store, _doc("a", "gamma"), "h2", n_chunks=3) == {"a": "changed"}
    new = store.doc_chunk_ids("a")
    assert len(new) == 3 and not set(old) & set(new)
    assert store.counts()["chunks"] == 3
    ops = [(c.op, c.chunk_id) for c in store.changes_since(0)]
    assert ops == [("add", old[0]), ("add", old[1]), ("del", old[0]), ("del", old[1])] + [
        ("add", c) for c in new
    ]


def test_doc_ids_with_prefix_is_an_exact_prefix(store):
    for doc_id in ("my_notes/a.md", "my_notes/b/c.md", "myXnotes/a.md", "my_notes-old/a.md", "100%/a.md",
                   "100x/a.md", "MY_NOTES/a.md", "my_notes"):
        _write(store, _doc(doc_id), "h", n_chunks=1)
    assert store.doc_ids_with_prefix("my_notes/") == ["my_notes/a.md", "my_notes/b/c.md"]
    assert store.doc_ids_with_prefix("100%/") == ["100%/a.md"]  # neither '_' nor '%' is a wildcard
    assert store.doc_ids_with_prefix("none/") == []


def test_delete_removes_chunks_embeddings_and_logs(store):
    _write(store, _doc("a"), "h")
    _write(store, _doc("b"), "h")
    ids = store.doc_chunk_ids("a")
    store.put_embeddings("m", {ids[0]: np.ones(4, dtype=np.float32)})
    assert store.delete_documents(["a", "missing"]) == ["a"]
    assert store.get_document("a") is None
    # retired, not gone: indexes that have not applied the deletion may still return these ids
    assert set(store.get_chunks(ids)) == set(ids) and store.doc_chunk_ids("a") == []
    assert store.get_chunks(ids, retired=False) == {}  # what catch-up reads: live chunks only
    assert store.live_chunk_ids().tolist() == store.doc_chunk_ids("b")
    assert store.purge_retired(store.max_seq() - 1) == 0  # the last deletion is not applied yet
    assert store.purge_retired(store.max_seq()) == len(ids)
    assert store.get_chunks(ids) == {}
    assert store.embeddings("m", ids) == {}
    assert store.counts()["documents"] == 1
    assert [c.op for c in store.changes_since(0)][-2:] == ["del", "del"]


def test_failed_transaction_leaves_nothing(store):
    good = DocumentWrite(_doc("ok"), "h", [ChunkDraft(0, "x", 0, 1, 1)])
    bad = DocumentWrite(_doc("bad"), "h", [ChunkDraft(0, None, 0, 1, 1)])  # NOT NULL violation
    with pytest.raises(Exception):
        store.write_documents([good, bad])
    assert store.counts()["documents"] == 0 and store.max_seq() == 0


def test_embeddings_roundtrip_and_dropped_for_unknown_chunk(store):
    _write(store, _doc("a"), "h")
    cid = store.doc_chunk_ids("a")[0]
    vec = np.arange(4, dtype=np.float32)
    store.put_embeddings("m", {cid: vec, 99999: vec})
    got = store.embeddings("m", [cid, 99999])
    assert list(got) == [cid] and np.array_equal(got[cid], vec)
    assert store.embeddings("other-model", [cid]) == {}


def test_filters(store):
    _write(store, _doc("a", day=1, source="x"), "h")
    _write(store, _doc("b", day=10, source="y"), "h")
    store.write_documents([DocumentWrite(Document("u", "undated"), "h", [ChunkDraft(0, "u", 0, 1, 1)])])
    since = datetime(2023, 8, 5, tzinfo=UTC)
    ids = store.chunk_ids_matching(SearchFilters(since=since))
    assert set(ids) == set(store.doc_chunk_ids("b"))
    until = datetime(2023, 8, 5, tzinfo=UTC)
    assert set(store.chunk_ids_matching(SearchFilters(until=until))) == set(store.doc_chunk_ids("a"))
    assert set(store.chunk_ids_matching(SearchFilters(sources=frozenset({"y"})))) == set(store.doc_chunk_ids("b"))
    assert set(store.chunk_ids_matching(SearchFilters(doc_ids=frozenset({"u"})))) == set(store.doc_chunk_ids("u"))
    # time zones are compared as instants
    tz8 = timezone(timedelta(hours=8))
    assert set(store.chunk_ids_matching(SearchFilters(since=datetime(2023, 8, 10, 8, tzinfo=tz8)))) == set(
        store.doc_chunk_ids("b")
    )


def test_net_changes():
    log = [Change(1, "add", 1, "a"), Change(2, "add", 2, "a"), Change(3, "del", 1, "a"), Change(4, "del", 7, "b")]
    adds, dels = net_changes(log)
    assert adds == [2] and dels == [7]


class _RecordingIndex(DerivedIndex):
    name = "rec"

    def __init__(self):
        self._seq = 0
        self.ids: set[int] = set()
        self.commits = 0

    @property
    def applied_seq(self):
        return self._seq

    def apply(self, added, deleted):
        self.ids |= {c.chunk_id for c in added}
        self.ids -= set(deleted)

    def commit(self, seq):
        self._seq = seq
        self.commits += 1

    def reset(self):
        self.ids, self._seq = set(), 0


def test_catch_up_matches_store_in_small_batches(store):
    idx = _RecordingIndex()
    for i in range(5):
        _write(store, _doc(f"d{i}"), "h")
    catch_up(store, idx)
    _write(store, _doc("d1", "changed"), "h2")
    store.delete_documents(["d3"])
    catch_up(store, idx, batch=3)
    assert idx.ids == set(store.live_chunk_ids().tolist())
    assert idx.applied_seq == store.max_seq()
    assert catch_up(store, idx) == 0


class _PrefetchingIndex(_RecordingIndex):
    """Records the order of hook calls: the next window must arrive before this one commits."""

    def __init__(self, fail_on_commit: int | None = None):
        super().__init__()
        self.events: list[tuple] = []
        self.fail_on_commit = fail_on_commit

    def prefetch(self, chunks):
        self.events.append(("prefetch", tuple(c.chunk_id for c in chunks)))

    def apply(self, added, deleted):
        super().apply(added, deleted)
        self.events.append(("apply", tuple(c.chunk_id for c in added)))

    def commit(self, seq):
        if self.commits == self.fail_on_commit:
            raise RuntimeError("disk full")
        super().commit(seq)
        self.events.append(("commit", seq))

    def end_catch_up(self):
        self.events.append(("end",))


def test_catch_up_hands_the_next_window_over_before_committing(store):
    for i in range(4):
        _write(store, _doc(f"d{i}"), "h")
    idx = _PrefetchingIndex()
    catch_up(store, idx, batch=3)
    kinds = [e[0] for e in idx.events]
    # apply(w1) prefetch(w2) commit(w1) apply(w2) prefetch(w3) commit(w2) ... apply(wn) commit(wn) end
    assert kinds[:3] == ["apply", "prefetch", "commit"] and kinds[-3:] == ["apply", "commit", "end"]
    applied = [e[1] for e in idx.events if e[0] == "apply"]
    prefetched = [e[1] for e in idx.events if e[0] == "prefetch"]
    assert prefetched == applied[1:] and len(applied) >= 3
    assert idx.ids == set(store.live_chunk_ids().tolist()) and idx.applied_seq == store.max_seq()


def test_catch_up_ends_the_index_even_when_a_commit_fails(store):
    for i in range(4):
        _write(store, _doc(f"d{i}"), "h")
    idx = _PrefetchingIndex(fail_on_commit=1)
    with pytest.raises(RuntimeError):
        catch_up(store, idx, batch=3)
    assert idx.events[-1] == ("end",) and idx.commits == 1


def test_changed_document_keeps_vectors_of_unchanged_chunk_texts(store):
    doc = _doc("a", "alpha beta")
    _write(store, doc, "h1", n_chunks=2)  # chunk texts "alpha beta 0", "alpha beta 1"
    old = store.doc_chunk_ids("a")
    store.put_embeddings("m1", {old[0]: np.full(4, 1, np.float32), old[1]: np.full(4, 2, np.float32)})
    store.put_embeddings("m2", {old[1]: np.full(4, 3, np.float32)})
    _write(store, doc, "h2", n_chunks=3)  # same texts plus "alpha beta 2", new chunk ids
    new = store.doc_chunk_ids("a")
    assert not set(old) & set(new)
    m1, m2 = store.embeddings("m1", new), store.embeddings("m2", new)
    assert sorted(m1) == new[:2] and m1[new[0]][0] == 1 and m1[new[1]][0] == 2
    assert list(m2) == [new[1]] and m2[new[1]][0] == 3
    assert store.embeddings("m1", old) == {}  # the old chunks' rows went with them
    _write(store, _doc("a", "gamma"), "h3", n_chunks=2)  # other texts: nothing to keep
    assert store.embeddings("m1", store.doc_chunk_ids("a")) == {}
