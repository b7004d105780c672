"""The change log is trimmed once every index applied it; an index left behind is rebuilt."""

import logging
from datetime import datetime, timezone

import pytest
from fakes import HashingEmbedder

from chronorag import indexing
from chronorag.config import load_settings
from chronorag.engine import ChronoRAG
from chronorag.indexing import catch_up, trim_change_log
from chronorag.store import DocumentWrite
from chronorag.types import ChunkDraft, Document

UTC = timezone.utc


def _write(store, doc_id, text, n_chunks=2):
    doc = Document(doc_id, text, datetime(2023, 8, 1, tzinfo=UTC))
    drafts = [ChunkDraft(i, f"{text} {i}", 0, len(text), 3) for i in range(n_chunks)]
    store.write_documents([DocumentWrite(doc, text, drafts)])


class _Index(indexing.DerivedIndex):
    """In-memory index that can be told to crash on a commit."""

    def __init__(self, name="rec", fail_on_commit=None):
        self.name, self._seq, self.ids = name, 0, set()
        self.commits: list[int] = []
        self.fail_on_commit = fail_on_commit

    @property
    def applied_seq(self):
        return self._seq

    def apply(self, added, deleted):
        self.ids |= {c.chunk_id for c in added}
        self.ids -= set(deleted)

    def commit(self, seq):
        if len(self.commits) == self.fail_on_commit:
            raise RuntimeError("killed")
        self._seq = seq
        self.commits.append(seq)

    def reset(self):
        self.ids, self._seq = set(), 0


def test_trimming_keeps_the_sequence_and_later_entries(store):
    for i in range(3):
        _write(store, f"d{i}", f"text {i}")
    newest = store.max_seq()
    assert store.log_start() == 0
    assert store.trim_changes(newest) == newest and store.trim_changes(newest) == 0
    assert store.max_seq() == newest == store.log_start()  # nothing left, the sequence stays
    assert store.counts()["change_seq"] == newest and store.counts()["change_log_entries"] == 0
    _write(store, "d9", "later")
    assert [c.seq for c in store.changes_since(0)] == [newest + 1, newest + 2]
    assert store.log_start() == newest and store.max_seq() == newest + 2


def test_an_index_behind_the_trimmed_log_is_rebuilt_as_of_the_log_start(store):
    for i in range(4):
        _write(store, f"d{i}", f"text {i}")
    stale = _Index()
    catch_up(store, stale)
    old_ids = set(stale.ids)
    _write(store, "d0", "changed")  # replaces d0's chunks
    store.delete_documents(["d1"])
    trimmed_through = store.max_seq()
    _write(store, "d5", "new after the trim point")
    _write(store, "d2", "changed after the trim point")
    store.delete_documents(["d3"])
    store.trim_changes(trimmed_through)
    live = set(store.live_chunk_ids().tolist())
    for index in (stale, _Index()):  # one that holds deleted chunks, one brand new
        catch_up(store, index, batch=1)
        assert index.ids == live and index.applied_seq == store.max_seq()
    assert not old_ids & live  # the stale ids really went
    # the rebuild applied the chunks live at the log's start (d0's two new ones) one batch at a
    # time, the first committed at 0 (a crash there leaves the index behind), then replayed the rest
    assert stale.commits[1:3] == [0, trimmed_through] and stale.commits[-1] == store.max_seq()


def test_a_rebuild_killed_part_way_is_redone(store):
    for i in range(5):
        _write(store, f"d{i}", f"text {i}")
    store.trim_changes(store.max_seq())
    index = _Index(fail_on_commit=1)
    with pytest.raises(RuntimeError):
        catch_up(store, index, batch=2)
    assert index.applied_seq == 0 and index.ids  # part of the chunks, and still behind the log
    index.fail_on_commit = None
    catch_up(store, index, batch=2)
    assert index.ids == set(store.live_chunk_ids().tolist()) and index.applied_seq == store.max_seq()


def test_trimming_waits_for_indexes_not_loaded_up_to_a_limit(store):
    for i in range(3):
        _write(store, f"d{i}", f"text {i}")
    behind = store.max_seq()
    store.record_index_progress({"graph": behind, "bm25": behind})
    for i in range(3, 6):
        _write(store, f"d{i}", f"text {i}")
    newest = store.max_seq()
    # bm25 is loaded and in step; the graph is not loaded and waits at `behind`
    assert trim_change_log(store, {"bm25": newest}, keep_for_unloaded=100) == behind
    assert store.log_start() == behind
    # too far behind: it stops holding the log back and will be rebuilt when it comes back
    assert trim_change_log(store, {"bm25": newest}, keep_for_unloaded=2) == newest - behind
    assert store.log_start() == newest
    # a loaded index that is behind is never left behind
    _write(store, "d9", "x")
    assert trim_change_log(store, {"bm25": store.max_seq(), "dense": newest}) == 0


WORDS = "river harbor copper lantern orchard meadow falcon glacier canyon prairie".split()


def _docs(version=0):
    return [Document(f"doc-{i}", f"The {w} report {version}. Officials discussed the {w} budget.",
                     datetime(2020 + i % 4, 1 + i, 5, tzinfo=UTC)) for i, w in enumerate(WORDS)]


def _engine(tmp_path, **kw):
    settings = load_settings(env={}, data_dir=tmp_path / "data", chunk_size=64, chunk_overlap=8, **kw)
    return ChronoRAG(settings, embedder=HashingEmbedder())


def test_the_log_stays_small_under_repeated_changes(tmp_path):
    with _engine(tmp_path) as rag:
        for version in range(6):
            rag.insert(_docs(version))
        counts = rag.store.counts()
        assert counts["change_log_entries"] == 0 and counts["change_seq"] == 11 * len(WORDS)  # 10 + 5 x (10 del + 10 add)
        assert {ix.name: ix.applied_seq for ix in rag.indexes()} == rag.store.index_progress()
        assert rag.retrieve("glacier budget", top_k=1)[0].text.startswith("The glacier report 5")


def test_an_index_turned_off_catches_up_incrementally_or_is_rebuilt(tmp_path, monkeypatch, caplog):
    with _engine(tmp_path) as rag:
        rag.insert(_docs(0))
    with _engine(tmp_path, graph="none") as rag:  # the graph waits, its log entries kept
        rag.insert(_docs(1))
        assert rag.store.counts()["change_log_entries"] > 0
    with caplog.at_level(logging.WARNING, logger="chronorag.indexing"), _engine(tmp_path) as rag:
        rag.sync()
        assert not caplog.records  # caught up from the log, not rebuilt
        assert rag.store.counts()["change_log_entries"] == 0
    monkeypatch.setattr(indexing, "KEEP_FOR_UNLOADED", 1)
    with _engine(tmp_path, graph="none") as rag:
        rag.insert(_docs(2))
        assert rag.store.counts()["change_log_entries"] == 0  # the graph no longer holds it back
    with caplog.at_level(logging.WARNING, logger="chronorag.indexing"), _engine(tmp_path) as rag:
        rag.sync()
        assert "graph index is behind the trimmed change log" in caplog.text
        graph_chunks = {r[0] for r in rag.store.query("SELECT chunk_id FROM graph_chunks")}
        assert graph_chunks == set(rag.store.live_chunk_ids().tolist())
        hit = rag.retrieve("glacier budget in 2023", top_k=1)[0]
        assert hit.text.startswith("The glacier report 2") and "graph" in hit.scores


def test_deleted_index_files_are_rebuilt_from_a_trimmed_log(tmp_path):
    import shutil

    with _engine(tmp_path) as rag:
        rag.insert(_docs(0))
        rag.insert(_docs(1))
        assert rag.store.counts()["change_log_entries"] == 0
    for name in ("bm25", "dense"):
        shutil.rmtree(tmp_path / "data" / name)
    with _engine(tmp_path) as rag:
        assert rag.retrieve("glacier budget", top_k=1)[0].text.startswith("The glacier report 1")
        live = set(rag.store.live_chunk_ids().tolist())
        bm25_ids, _ = rag.bm25.search("report budget", k=1000)
        dense_ids, _ = rag.dense.search("report budget", k=1000)
        assert set(bm25_ids.tolist()) == live == set(dense_ids.tolist())


def test_catch_up_passes_on_the_progress_an_index_reports_inside_a_window(store):
    """A long window (embedding thousands of chunks) moves the progress bar as it goes, and the
    total is still one per log entry."""
    for i in range(3):
        _write(store, f"d{i}", f"text {i}", n_chunks=4)

    class Stepping(_Index):
        def report_progress(self, step):
            self.step = step

        def apply(self, added, deleted):
            super().apply(added, deleted)
            for _ in added:
                self.step(1)
            self.step(100)  # more than the window holds: capped

    steps: list[int] = []
    catch_up(store, Stepping(), progress=steps.append)
    assert steps[:12] == [1] * 12 and sum(steps) == 12
