"""Segmented BM25: equivalence with bm25s, global IDF across segments, deletes, merges, persistence."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import bm25s
import numpy as np
import pytest

from chronorag.retrieval.bm25_segments import MANIFEST, SegmentedBM25
from chronorag.retrieval.tokenize import Tokenizer
from chronorag.types import Chunk

WORDS = (
    "harbour copper market budget glacier report river tariff vaccine rocket orchard lantern "
    "signal castle forest island mining subway festival drought factory museum election"
).split()


def chunk(cid: int, text: str) -> Chunk:
    return Chunk(cid, f"doc{cid}", 0, text, 0, len(text), 0, None, "test")


def corpus(n: int, seed: int = 0, fixed_len: int | None = None) -> list[Chunk]:
    rng = random.Random(seed)
    out = []
    for cid in range(1, n + 1):
        length = fixed_len or rng.randint(4, 30)
        out.append(chunk(cid, " ".join(rng.choice(WORDS) for _ in range(length))))
    return out


def make(path: Path, **kw) -> SegmentedBM25:
    kw.setdefault("background", False)
    kw.setdefault("workers", 1)
    return SegmentedBM25(path, Tokenizer(), **kw)


def build(path: Path, chunks: list[Chunk], batches: int = 1, **kw) -> SegmentedBM25:
    ix = make(path, **kw)
    for i, part in enumerate(np.array_split(np.arange(len(chunks)), batches)):
        ix.apply([chunks[j] for j in part], [])
        ix.commit(i + 1)
    return ix


NO_MERGES = {"max_segments": 100, "delta_fraction": 1.0}
QUERIES = ["harbour copper", "glacier river glacier", "vaccine election museum", "subway"]


def test_single_segment_ranks_like_plain_bm25s(tmp_path):
    chunks = corpus(120)
    ix = build(tmp_path / "ix", chunks)
    tok = Tokenizer()
    plain = bm25s.BM25(k1=1.5, b=0.75, method="lucene")
    plain.index([tok.tokenize(c.text) for c in chunks], show_progress=False)
    for q in QUERIES:
        ids, scores = ix.search(q, k=10)
        expected = plain.get_scores(tok.tokenize(q))
        assert np.allclose(scores, expected[ids - 1], rtol=1e-5)
        best = np.sort(expected)[::-1][:10]
        assert np.allclose(scores, best, rtol=1e-5)
    # the segment directory is itself a bm25s index
    seg_dir = tmp_path / "ix" / ix.stats()["segment_names"][0]
    loaded = bm25s.BM25.load(str(seg_dir))
    q = tok.tokenize("harbour copper")
    assert np.allclose(loaded.get_scores(q), plain.get_scores(q), rtol=1e-5)


def test_segments_share_global_idf(tmp_path):
    # equal-length documents: every segment has the same average length, so scores must equal a
    # single index's exactly; only global document frequencies can make that true
    chunks = corpus(200, seed=1, fixed_len=12)
    one = build(tmp_path / "one", chunks)
    many = build(tmp_path / "many", chunks, batches=5, **NO_MERGES)
    assert many.stats()["segments"] == 5
    for q in QUERIES:
        ids1, s1 = one.search(q, k=200)
        ids5, s5 = many.search(q, k=200)
        assert set(ids1) == set(ids5)
        by_id = dict(zip(ids5.tolist(), s5.tolist()))
        assert np.allclose(s1, [by_id[i] for i in ids1], rtol=1e-5)


def test_a_delta_segment_normalises_length_by_the_whole_index(tmp_path):
    # a main segment of short chunks, then a delta of long ones: with its own average length the
    # delta's chunks would look average-length and outrank the short ones; in one index they do not
    rng = random.Random(3)
    short = [chunk(i, "kiwi " + " ".join(rng.choice(WORDS) for _ in range(3))) for i in range(1, 41)]
    long = [chunk(100 + i, "kiwi " + " ".join(rng.choice(WORDS) for _ in range(60))) for i in range(5)]
    one = make(tmp_path / "one")
    one.apply(short + long, [])
    one.commit(1)
    many = make(tmp_path / "many", **NO_MERGES)
    many.apply(short, [])
    many.commit(1)
    many.apply(long, [])
    many.commit(2)
    assert many.stats()["segments"] == 2
    ids1, s1 = one.search("kiwi", k=45)
    ids2, s2 = many.search("kiwi", k=45)
    by_id = dict(zip(ids2.tolist(), s2.tolist()))
    # the delta's chunks score exactly as in one index (the main segment's were normalised by the
    # short chunks alone, so they may sit a little higher until a merge)
    for cid, score in zip(ids1.tolist(), s1.tolist()):
        if cid >= 100:
            assert by_id[cid] == pytest.approx(score, rel=1e-5)
    assert set(ids2[-5:].tolist()) == {100, 101, 102, 103, 104}  # long chunks rank last, as in one index


def test_segments_of_varied_lengths_rank_clear_cases_alike(tmp_path):
    chunks = corpus(300, seed=2)
    chunks[41] = chunk(42, "glacier glacier glacier tariff")
    chunks[250] = chunk(251, "rocket orchard lantern rocket")
    one = build(tmp_path / "one", chunks)
    many = build(tmp_path / "many", chunks, batches=4, **NO_MERGES)
    assert many.search("glacier tariff", 1)[0].tolist() == [42]
    assert many.search("rocket lantern", 1)[0].tolist() == [251]
    for q in QUERIES:
        ids1, s1 = one.search(q, k=300)
        ids4, s4 = many.search(q, k=300)
        by_id = dict(zip(ids4.tolist(), s4.tolist()))
        assert set(ids1) == set(ids4)
        assert np.allclose(s1, [by_id[i] for i in ids1], rtol=0.1)  # only avgdl differs


def test_delete_hides_immediately_and_survives_reload(tmp_path):
    chunks = corpus(50, seed=3)
    chunks[9] = chunk(10, "glacier glacier glacier")
    ix = build(tmp_path / "ix", chunks)
    assert ix.search("glacier", 1)[0].tolist() == [10]
    ix.apply([], [10, 999_999])  # unknown id: no-op
    assert 10 not in ix.search("glacier", 50)[0]  # before commit
    ix.commit(2)
    again = make(tmp_path / "ix")
    assert 10 not in again.search("glacier", 50)[0]
    assert again.applied_seq == 2 and again.stats()["deleted"] == 1


def test_merge_drops_tombstones_and_equals_fresh_index(tmp_path):
    chunks = corpus(150, seed=4)
    ix = build(tmp_path / "ix", chunks, batches=3, **NO_MERGES)
    dead = list(range(1, 151, 7))
    ix.apply([], dead)
    ix.commit(10)
    before = {q: ix.search(q, 150)[0].tolist() for q in QUERIES}
    ix.merge()
    st = ix.stats()
    assert st["segments"] == 1 and st["deleted"] == 0 and st["docs"] == 150 - len(dead)
    fresh = build(tmp_path / "fresh", [c for c in chunks if c.chunk_id not in set(dead)])
    for q in QUERIES:
        ids, scores = ix.search(q, 150)
        assert set(ids.tolist()) == set(before[q])
        fids, fscores = fresh.search(q, 150)
        assert ids.tolist() == fids.tolist() and np.allclose(scores, fscores, rtol=1e-6)
    names = {p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith(("seg-", "tomb-"))}
    assert names == set(st["segment_names"])  # replaced segments and tombstones were deleted


def test_persistence_round_trip(tmp_path):
    chunks = corpus(80, seed=5)
    ix = build(tmp_path / "ix", chunks, batches=2, **NO_MERGES)
    ix.apply([], [3, 4])
    ix.commit(7)
    again = make(tmp_path / "ix", **NO_MERGES)
    assert again.applied_seq == 7
    assert again.stats()["segment_docs"] == ix.stats()["segment_docs"]
    for q in QUERIES:
        a, b = ix.search(q, 20), again.search(q, 20)
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])


def test_files_not_in_manifest_are_ignored_and_cleaned(tmp_path):
    ix = build(tmp_path / "ix", corpus(30, seed=6))
    expected = ix.search("harbour", 5)
    stale = tmp_path / "ix" / "seg-99999999-0001-abcdef"
    stale.mkdir()
    (stale / "data.csc.index.npy").write_bytes(b"garbage")
    partial = tmp_path / "ix" / ".tmp-seg-00000009-0001-123456"
    partial.mkdir()
    (tmp_path / "ix" / "tomb-00000077.npy").write_bytes(b"x")
    (tmp_path / "ix" / ".manifest.json.123.456.tmp").write_text("{")
    again = make(tmp_path / "ix")
    assert not stale.exists() and not partial.exists()
    assert not (tmp_path / "ix" / "tomb-00000077.npy").exists()
    assert not (tmp_path / "ix" / ".manifest.json.123.456.tmp").exists()
    got = again.search("harbour", 5)
    assert got[0].tolist() == expected[0].tolist()


def test_an_unreadable_manifest_means_empty_and_is_reported_once(tmp_path, caplog):
    build(tmp_path / "ix", corpus(30, seed=6))
    (tmp_path / "ix" / MANIFEST).write_text("garbage")
    with caplog.at_level("WARNING", logger="chronorag.retrieval.bm25_segments"):
        again = make(tmp_path / "ix")
        for _ in range(3):
            assert again.search("harbour", 5)[0].size == 0 and again.applied_seq == 0  # catch-up rebuilds
    assert caplog.text.count("is unreadable") == 1


def test_failed_commit_leaves_previous_manifest(tmp_path, monkeypatch):
    ix = build(tmp_path / "ix", corpus(40, seed=7))
    import chronorag.retrieval.bm25_manifest as mod

    def boom(path, write):
        raise OSError("disk full")

    monkeypatch.setattr(mod, "atomic_write", boom)
    ix.apply([chunk(1000, "glacier lantern")], [])
    with pytest.raises(OSError):
        ix.commit(2)
    monkeypatch.undo()
    assert ix.applied_seq == 1 and ix.stats()["pending"] == 1  # memory did not move ahead either
    again = make(tmp_path / "ix")
    assert again.applied_seq == 1 and again.stats()["docs"] == 40
    assert 1000 not in again.search("glacier lantern", 50)[0]
    # the orphaned segment of the failed commit is gone; a retry commits the same work
    assert len([p for p in (tmp_path / "ix").iterdir() if p.name.startswith("seg-")]) == 1
    ix.commit(2)
    assert 1000 in make(tmp_path / "ix").search("glacier lantern", 50)[0]


def test_allowed_returns_best_k_among_allowed(tmp_path):
    chunks = corpus(200, seed=8)
    ix = build(tmp_path / "ix", chunks, batches=3, **NO_MERGES)
    all_ids, all_scores = ix.search("harbour copper glacier", 200)
    allowed = np.sort(all_ids[10::2])  # excludes the ten best
    ids, scores = ix.search("harbour copper glacier", 5, allowed=allowed)
    assert len(ids) == 5 and set(ids.tolist()) <= set(allowed.tolist())
    ranked = [i for i in all_ids.tolist() if i in set(allowed.tolist())]
    assert ids.tolist() == ranked[:5]
    unsorted = allowed[::-1].copy()
    assert ix.search("harbour copper glacier", 5, allowed=unsorted)[0].tolist() == ids.tolist()
    assert ix.search("harbour", 5, allowed=np.array([], dtype=np.int64))[0].size == 0


def test_edge_cases(tmp_path):
    empty = make(tmp_path / "empty")
    assert empty.search("harbour", 5)[0].size == 0 and empty.applied_seq == 0
    ix = build(tmp_path / "ix", corpus(20, seed=9))
    assert ix.search("zzzz qqqq", 5)[0].size == 0  # no known token
    assert ix.search("the of and", 5)[0].size == 0  # only stop words
    assert ix.search("harbour", 0)[0].size == 0
    ids, _ = ix.search("harbour copper market budget glacier report", 1000)
    assert 0 < len(ids) <= 20 and len(set(ids.tolist())) == len(ids)
    # duplicate adds are ignored, within a batch and against the index
    ix.apply([chunk(5, "lantern"), chunk(500, "lantern"), chunk(500, "lantern")], [])
    ix.commit(2)
    assert ix.stats()["docs"] == 21
    # add then delete before commit: never indexed
    ix.apply([chunk(600, "orchard orchard")], [])
    ix.apply([], [600])
    ix.commit(3)
    assert 600 not in ix.search("orchard", 100)[0] and ix.stats()["docs"] == 21


def test_too_many_segments_merges_the_deltas(tmp_path):
    chunks = corpus(400, seed=10)
    ix = make(tmp_path / "ix", max_segments=3, delta_fraction=0.9)
    ix.apply(chunks[:300], [])
    ix.commit(1)
    for i in range(4):
        ix.apply(chunks[300 + 25 * i : 325 + 25 * i], [])
        ix.commit(2 + i)
    st = ix.stats()
    assert st["segments"] <= 3 and st["docs"] == 400 and max(st["segment_docs"]) == 300


def test_big_delta_share_triggers_full_merge(tmp_path):
    chunks = corpus(100, seed=11)
    ix = make(tmp_path / "ix", max_segments=8, delta_fraction=0.2)
    ix.apply(chunks[:70], [])
    ix.commit(1)
    ix.apply(chunks[70:], [])  # 30% in a delta
    ix.commit(2)
    assert ix.stats()["segments"] == 1 and ix.stats()["docs"] == 100


def test_background_merge_keeps_search_working(tmp_path):
    chunks = corpus(3000, seed=12)
    ix = make(tmp_path / "ix", background=True, **NO_MERGES)
    for i, part in enumerate(np.array_split(np.arange(3000), 6)):
        ix.apply([chunks[j] for j in part], [])
        ix.commit(i + 1)
    expected = {q: ix.search(q, 10) for q in QUERIES}
    ix.delta_fraction = 0.2
    errors: list[str] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            for q in QUERIES:
                ids, _ = ix.search(q, 10)
                if len(ids) != 10:
                    errors.append(f"{q}: {len(ids)} hits")

    t = threading.Thread(target=searcher)
    t.start()
    assert ix.maybe_merge_in_background()
    ix.wait_for_merge()
    stop.set()
    t.join()
    assert not errors and ix.last_merge_error is None
    assert ix.stats()["segments"] == 1
    for q in QUERIES:
        ids, scores = ix.search(q, 10)
        assert np.allclose(scores, expected[q][1], rtol=0.05)  # same docs, one avgdl now
        assert len(set(ids.tolist()) & set(expected[q][0].tolist())) >= 8


def test_reset_then_rebuild_replaces_old_files(tmp_path):
    ix = build(tmp_path / "ix", corpus(30, seed=13))
    old = set(ix.stats()["segment_names"])
    ix.reset()
    assert ix.search("harbour", 5)[0].size == 0 and ix.applied_seq == 0
    ix.apply(corpus(10, seed=14), [])
    ix.commit(5)
    names = {p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("seg-")}
    assert names and not names & old


def test_other_tokenizer_or_parameters_mean_rebuild(tmp_path):
    build(tmp_path / "ix", corpus(30, seed=15))
    assert SegmentedBM25(tmp_path / "ix", Tokenizer(hmm=True), background=False).applied_seq == 0
    assert make(tmp_path / "ix", k1=1.2).applied_seq == 0
    assert make(tmp_path / "ix").applied_seq == 1  # nothing was overwritten by merely opening


def test_reader_sees_another_writers_commit(tmp_path):
    writer = build(tmp_path / "ix", corpus(30, seed=16))
    reader = make(tmp_path / "ix")
    writer.apply([chunk(777, "zeppelin zeppelin")], [])
    writer.commit(2)
    assert reader.applied_seq == 2
    assert reader.search("zeppelin", 3)[0].tolist() == [777]


_KILL_SCRIPT = """
import sys
from pathlib import Path
from chronorag.retrieval.bm25_segments import SegmentedBM25
from chronorag.retrieval.tokenize import Tokenizer
from chronorag.types import Chunk
ix = SegmentedBM25(Path(sys.argv[1]), Tokenizer(), background=True, workers=1, max_segments=3)
seq = ix.applied_seq
while True:
    seq += 1
    ix.apply([Chunk(seq * 1000 + j, "d", 0, f"glacier report {seq} item{j}", 0, 1, 1, None, "")
              for j in range(200)], [seq * 1000 - 1000])
    ix.commit(seq)
    print(seq, flush=True)
"""


@pytest.mark.slow
def test_kill_9_mid_commit_leaves_a_consistent_index(tmp_path):
    for round_ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "ix")],
            stdout=subprocess.PIPE, env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        assert proc.stdout is not None
        for _ in range(3 + round_):
            assert proc.stdout.readline()
        time.sleep(random.Random(round_).uniform(0.0, 0.2))
        proc.kill()
        proc.wait()
        ix = make(tmp_path / "ix")
        seq = ix.applied_seq
        manifest = json.loads((tmp_path / "ix" / MANIFEST).read_text())
        assert manifest["applied_seq"] == seq >= 3
        # every committed batch is searchable: its chunks carry the item terms of commit `seq`
        ids, _ = ix.search(f"report {seq}", 300)
        assert {seq * 1000 + j for j in range(200)} == set(ids[:200].tolist())
        # and every committed delete is hidden
        assert (seq - 1) * 1000 not in ix.search(f"report {seq - 1}", 300)[0]
        on_disk = {p.name for p in (tmp_path / "ix").iterdir() if not p.name.startswith(".")}
        assert on_disk == {MANIFEST, *manifest["segments"], *([manifest["tombstones"]] if manifest["tombstones"] else [])}


def test_merge_never_persists_uncommitted_deletes(tmp_path):
    ix = build(tmp_path / "ix", corpus(60, seed=17), batches=3, **NO_MERGES)
    ix.apply([], [5])
    ix.merge()  # runs between apply and commit
    assert 5 not in ix.search("harbour copper market budget", 60)[0]
    assert make(tmp_path / "ix").stats()["docs"] == 60  # on disk: still the state at seq 3
    ix.commit(4)
    again = make(tmp_path / "ix")
    assert again.applied_seq == 4 and again.stats()["deleted"] == 1
    assert 5 not in again.search("harbour copper market budget", 60)[0]


def test_merge_policy():
    from chronorag.retrieval.bm25_policy import plan_merge

    none = frozenset()
    assert plan_merge([], 0, none, 8, 0.2).kind == "none"
    assert plan_merge([1000, 50, 50], 0, none, 8, 0.2).kind == "none"
    assert plan_merge([1000, 200, 100], 0, none, 8, 0.2).members == (0, 1, 2)  # deltas > 20%
    assert plan_merge([1000], 300, none, 8, 0.2).kind == "full"  # mostly tombstones: compact
    small = plan_merge([1000, 10, 10, 10, 10], 0, none, 3, 0.2)
    assert small.kind == "deltas" and small.members == (1, 2, 3, 4)
    # a merge holds the first three: only the newer deltas may be merged meanwhile
    busy = plan_merge([1000, 400, 10, 10, 10], 0, frozenset({0, 1, 2}), 3, 0.2)
    assert busy.kind == "deltas" and busy.members == (3, 4)


def test_score_matrix_matches_the_lucene_formula_with_empty_documents():
    """The vectorised build against the formula written out, term by term and document by document."""
    from chronorag.retrieval import bm25_scoring

    rng = np.random.default_rng(3)
    lengths = rng.integers(0, 12, size=40)
    lengths[[0, 17, 39]] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    ids = rng.integers(0, 25, size=int(offsets[-1])).astype(np.int32)
    k1, b = 1.5, 0.75
    m = bm25_scoring.build_score_matrix(ids, offsets, 25, k1, b)
    avgdl = lengths.mean()
    tf = np.zeros((40, 25))
    for d in range(40):
        for t in ids[offsets[d] : offsets[d + 1]]:
            tf[d, t] += 1
    df = (tf > 0).sum(0)
    idf = np.log1p((40 - df + 0.5) / (df + 0.5))
    expected = idf * tf / (tf + k1 * (1 - b + b * lengths[:, None] / avgdl))
    got = np.zeros((40, 25))
    for t in range(25):
        rows = m.indices[m.indptr[t] : m.indptr[t + 1]]
        assert np.all(np.diff(rows) > 0)  # each term's documents once, in order
        got[rows, t] = m.data[m.indptr[t] : m.indptr[t + 1]]
    np.testing.assert_allclose(got, expected, rtol=1e-5)
