"""BM25 arithmetic shared by the segments: building a bm25s-layout score matrix and scoring queries.

The matrix is bm25s's eager layout (CSC over the vocabulary: for term ``t`` the documents
``indices[indptr[t]:indptr[t+1]]`` and their precomputed scores ``data[...]``), with bm25s's
'lucene' formulas, so a segment saved here loads with ``bm25s.BM25.load`` and ranks exactly as
``bm25s.BM25(method='lucene').index(...)`` would. It is built with whole-array numpy operations
instead of bm25s's per-document Python loop because merges rebuild hundreds of thousands of
documents at a time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from chronorag.retrieval.bm25_segment import Segment


def lucene_idf(df: np.ndarray | float, n_docs: np.ndarray | float) -> np.ndarray:
    """bm25s 'lucene' idf: log(1 + (N - df + 0.5) / (df + 0.5)); always > 0."""
    df = np.asarray(df, dtype=np.float64)
    return np.log1p((np.asarray(n_docs, dtype=np.float64) - df + 0.5) / (df + 0.5))


@dataclass(frozen=True)
class ScoreMatrix:
    data: np.ndarray  # float32 idf(t) * tfc(t, d), term-major
    indices: np.ndarray  # int32 document row of each entry
    indptr: np.ndarray  # int64, n_terms + 1
    n_docs: int
    avgdl: float

    @property
    def df(self) -> np.ndarray:
        return np.diff(self.indptr)


def build_score_matrix(
    term_ids: np.ndarray, offsets: np.ndarray, n_terms: int, k1: float, b: float, avgdl: float | None = None
) -> ScoreMatrix:
    """Score matrix for documents given as concatenated term ids with per-document offsets.

    ``avgdl`` is the average length the length normalisation divides by: the documents' own by
    default; a delta segment passes the whole index's, so its chunks score as they would there."""
    n_docs = len(offsets) - 1
    lengths = np.diff(offsets).astype(np.int64)
    if avgdl is None or not avgdl > 0:
        avgdl = float(lengths.mean()) if n_docs and lengths.sum() else 1.0
    if term_ids.size == 0:
        return ScoreMatrix(
            np.empty(0, np.float32), np.empty(0, np.int32), np.zeros(n_terms + 1, np.int64), n_docs, avgdl
        )
    rows = np.repeat(np.arange(n_docs, dtype=np.int64), lengths)
    # Sorting (term << 32 | doc) keys yields each (term, doc) pair's count and the CSC order at once.
    keys = np.left_shift(term_ids.astype(np.int64), 32)
    keys |= rows
    del rows
    keys.sort()
    first = np.empty(keys.size, dtype=bool)
    first[0] = True
    np.not_equal(keys[1:], keys[:-1], out=first[1:])
    starts = np.flatnonzero(first)
    tf = np.diff(np.append(starts, keys.size)).astype(np.float32)
    pairs = keys[starts]
    del keys, first, starts
    terms = np.right_shift(pairs, 32)
    docs = (pairs & 0xFFFFFFFF).astype(np.int32)
    df = np.bincount(terms, minlength=n_terms)
    indptr = np.zeros(n_terms + 1, dtype=np.int64)
    np.cumsum(df, out=indptr[1:])
    idf = lucene_idf(df, n_docs).astype(np.float32)
    doc_norm = (k1 * ((1.0 - b) + b * lengths / avgdl)).astype(np.float32)
    denom = doc_norm[docs]
    denom += tf
    np.divide(tf, denom, out=tf)
    tf *= idf[terms]
    data = tf
    return ScoreMatrix(data, docs, indptr, n_docs, avgdl)


def accumulate(
    postings: list[tuple[np.ndarray, np.ndarray, float]], n_docs: int
) -> np.ndarray:
    """Sum weighted posting lists (doc rows, partial scores, weight) into one score per document."""
    if not postings:
        return np.zeros(n_docs, dtype=np.float64)
    if len(postings) == 1:
        rows, data, w = postings[0]
        out = np.zeros(n_docs, dtype=np.float64)
        out[rows] = data * w  # one term: rows are unique
        return out
    rows = np.concatenate([p[0] for p in postings])
    vals = np.concatenate([p[1].astype(np.float64) * p[2] for p in postings])
    return np.bincount(rows, weights=vals, minlength=n_docs)


def top_k(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best (id, score) pairs, best first; ties go to the smaller id, so runs repeat."""
    if k <= 0 or ids.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    if ids.size > k:
        part = np.argpartition(-scores, k - 1)
        kth = scores[part[k - 1]]
        keep = scores >= kth  # everything tied with the k-th, so the tie-break below is exact
        ids, scores = ids[keep], scores[keep]
    order = np.lexsort((ids, -scores))[:k]
    return ids[order].astype(np.int64), scores[order].astype(np.float32)


def search_segments(
    segments: Sequence["Segment"],
    dead: np.ndarray,
    term_counts: Mapping[str, int],
    k: int,
    allowed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` live (and allowed) chunks over all segments, scored with global idf.

    Each segment stored idf_segment(t) * tf-part; rescaling a term's postings by
    idf_global(t) / idf_segment(t) makes every segment score as if it were part of one index
    (document frequencies and N summed over segments, deleted documents included).
    ``dead`` and ``allowed`` are ascending chunk ids. Only documents containing a query term
    are candidates, so fewer than ``k`` may come back.
    """
    from chronorag.retrieval.bm25_segment import in_sorted

    terms = list(term_counts)
    term_rows = [[seg.vocab.get(t) for t in terms] for seg in segments]
    df = np.zeros(len(terms), dtype=np.float64)
    for seg, rows in zip(segments, term_rows):
        for j, tid in enumerate(rows):
            if tid is not None:
                df[j] += seg.indptr[tid + 1] - seg.indptr[tid]
    if not df.any():
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    idf = lucene_idf(df, sum(seg.n_docs for seg in segments))
    found_ids, found_scores = [], []
    for seg, rows in zip(segments, term_rows):
        postings = []
        for j, tid in enumerate(rows):
            if tid is None:
                continue
            lo, hi = seg.indptr[tid], seg.indptr[tid + 1]
            weight = term_counts[terms[j]] * idf[j] / seg.idf[tid]
            postings.append((seg.indices[lo:hi], seg.data[lo:hi], weight))
        if not postings:
            continue
        scores = accumulate(postings, seg.n_docs)
        hit_rows = np.flatnonzero(scores)
        ids = seg.chunk_ids[hit_rows]
        keep = ~in_sorted(ids, dead)
        if allowed is not None:
            keep &= in_sorted(ids, allowed)
        found_ids.append(ids[keep])
        found_scores.append(scores[hit_rows[keep]])
    if not found_ids:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    return top_k(np.concatenate(found_ids), np.concatenate(found_scores), k)
