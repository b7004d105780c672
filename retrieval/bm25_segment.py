"""One immutable BM25 segment on disk: a bm25s index plus the chunk ids and token lists behind it.

A segment directory is written once (into a temporary name, fsynced, then renamed) and never
modified. Besides bm25s's own files (``bm25s.BM25.load(path)`` opens it) it keeps:

- ``chunk_ids.npy``: int64, ascending; row ``i`` of the score matrix is chunk ``chunk_ids[i]``;
- ``terms.npy`` / ``offsets.npy``: every document's terms as int32 ids into the segment vocabulary,
  so merging segments never tokenises text again;
- ``segment.json``: size, average length, parameters, tokenizer signature (written last).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from chronorag.retrieval.index_files import fsync_dir, fsync_tree
from chronorag.retrieval.bm25_scoring import ScoreMatrix, build_score_matrix, lucene_idf

SEGMENT_META = "segment.json"
FORMAT_VERSION = 1


class SegmentError(RuntimeError):
    """A segment directory is missing files or does not match what the manifest expects."""


@dataclass
class Segment:
    name: str
    path: Path
    chunk_ids: np.ndarray
    vocab: dict[str, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    terms: np.ndarray
    offsets: np.ndarray
    avgdl: float
    _words: list[str] | None = field(default=None, repr=False)
    _idf: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_docs(self) -> int:
        return int(self.chunk_ids.size)

    @property
    def df(self) -> np.ndarray:
        return np.diff(self.indptr)

    @property
    def idf(self) -> np.ndarray:
        """This segment's own idf per term (what its stored scores were multiplied by)."""
        if self._idf is None:
            self._idf = lucene_idf(self.df, self.n_docs)
        return self._idf

    @property
    def words(self) -> list[str]:
        """Vocabulary as a list indexed by term id (built on demand, for merges)."""
        if self._words is None:
            words = [""] * len(self.vocab)
            for w, i in self.vocab.items():
                words[i] = w
            self._words = words
        return self._words

    def doc_terms(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Term ids and offsets of the given rows, in that order."""
        return gather_docs(self.terms, self.offsets, rows)

    # ------------------------------------------------------------------ i/o
    @classmethod
    def load(cls, path: Path, vocab: dict[str, int] | None = None) -> "Segment":
        """Open a segment; the large arrays are memory-mapped, not read (the page cache holds them)."""
        try:
            meta = json.loads((path / SEGMENT_META).read_text(encoding="utf-8"))
            if vocab is None:
                with open(path / "vocab.index.json", encoding="utf-8") as f:
                    vocab = json.load(f)
            arrays = {
                name: np.load(path / f"{name}.npy", mmap_mode="r")
                for name in ("chunk_ids", "terms", "offsets")
            }
            data = np.load(path / "data.csc.index.npy", mmap_mode="r")
            indices = np.load(path / "indices.csc.index.npy", mmap_mode="r")
            indptr = np.load(path / "indptr.csc.index.npy")
        except (OSError, ValueError) as exc:
            raise SegmentError(f"BM25 segment {path.name} is unreadable: {exc}") from exc
        seg = cls(
            name=path.name,
            path=path,
            chunk_ids=np.asarray(arrays["chunk_ids"]),
            vocab=vocab,
            data=data,
            indices=indices,
            indptr=indptr,
            terms=arrays["terms"],
            offsets=np.asarray(arrays["offsets"]),
            avgdl=float(meta["avgdl"]),
        )
        if seg.n_docs != meta["n_docs"] or indptr.size != len(vocab) + 1 or seg.offsets.size != seg.n_docs + 1:
            raise SegmentError(f"BM25 segment {path.name} is inconsistent with its metadata")
        return seg


def write_segment(
    directory: Path,
    name: str,
    chunk_ids: np.ndarray,
    words: list[str],
    terms: np.ndarray,
    offsets: np.ndarray,
    k1: float,
    b: float,
    tokenizer_signature: str,
    avgdl: float | None = None,
) -> Segment:
    """Build and durably write a segment; documents are reordered by chunk id, unused words dropped.
    ``avgdl``: see build_score_matrix (None = this segment's own average length)."""
    chunk_ids = np.asarray(chunk_ids, dtype=np.int64)
    order = np.argsort(chunk_ids, kind="stable")
    if not np.array_equal(order, np.arange(order.size)):
        terms, offsets = gather_docs(terms, offsets, order)
        chunk_ids = chunk_ids[order]
    # keep only the words some document uses (a merge drops deleted documents' words)
    used = np.flatnonzero(np.bincount(terms, minlength=len(words))) if terms.size else np.empty(0, np.int64)
    if used.size != len(words):
        remap = np.zeros(len(words), dtype=np.int32)
        remap[used] = np.arange(used.size, dtype=np.int32)
        terms = remap[terms]
        words = [words[i] for i in used.tolist()]
    terms = np.asarray(terms, dtype=np.int32)
    matrix = build_score_matrix(terms, offsets, len(words), k1, b, avgdl)

    final = directory / name
    tmp_dir = directory / f".tmp-{name}"
    shutil.rmtree(tmp_dir, ignore_errors=True)
    tmp_dir.mkdir(parents=True)
    vocab = {w: i for i, w in enumerate(words)}
    _save_bm25s(tmp_dir, matrix, vocab, k1, b)
    np.save(tmp_dir / "chunk_ids.npy", chunk_ids)
    np.save(tmp_dir / "terms.npy", terms)
    np.save(tmp_dir / "offsets.npy", offsets.astype(np.int64))
    meta = {
        "format": FORMAT_VERSION,
        "n_docs": int(chunk_ids.size),
        "n_terms": len(words),
        "avgdl": matrix.avgdl,
        "k1": k1,
        "b": b,
        "method": "lucene",
        "tokenizer": tokenizer_signature,
    }
    (tmp_dir / SEGMENT_META).write_text(json.dumps(meta), encoding="utf-8")
    fsync_tree(tmp_dir)
    os.replace(tmp_dir, final)
    fsync_dir(directory)
    segment = Segment.load(final, vocab=vocab)  # memory-mapped, like a segment opened later
    segment._words = words
    return segment


def _save_bm25s(path: Path, matrix: ScoreMatrix, vocab: dict[str, int], k1: float, b: float) -> None:
    """Write the score matrix through bm25s itself, so the directory is a genuine bm25s index."""
    import bm25s

    model = bm25s.BM25(k1=k1, b=b, method="lucene")
    model.scores = {
        "data": matrix.data,
        "indices": matrix.indices,
        "indptr": matrix.indptr,
        "num_docs": matrix.n_docs,
    }
    model.vocab_dict = vocab
    model.nonoccurrence_array = None
    model.save(str(path), show_progress=False)


def merge_documents(
    segments: list[Segment], dead: np.ndarray
) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    """The surviving documents of ``segments`` under one vocabulary: (chunk ids, words, terms, offsets)."""
    vocab: dict[str, int] = {}
    all_ids, all_terms, all_offsets = [], [], [np.zeros(1, dtype=np.int64)]
    base = 0
    for seg in segments:
        rows = np.flatnonzero(~in_sorted(seg.chunk_ids, dead))
        if rows.size == 0:
            continue
        remap = np.fromiter(
            (vocab.setdefault(w, len(vocab)) for w in seg.words), dtype=np.int32, count=len(seg.words)
        )
        terms, offsets = seg.doc_terms(rows)
        all_ids.append(seg.chunk_ids[rows])
        all_terms.append(remap[terms] if terms.size else terms)
        all_offsets.append(offsets[1:] + base)
        base += int(offsets[-1])
    if not all_ids:
        return np.empty(0, np.int64), [], np.empty(0, np.int32), np.zeros(1, np.int64)
    return (
        np.concatenate(all_ids),
        list(vocab),
        np.concatenate(all_terms).astype(np.int32, copy=False),
        np.concatenate(all_offsets),
    )


def gather_docs(
    terms: np.ndarray, offsets: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Select documents ``rows`` (in that order) from concatenated term lists, without a Python loop."""
    starts = np.asarray(offsets[:-1])[rows]
    lengths = np.asarray(offsets[1:])[rows] - starts
    new_offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=new_offsets[1:])
    if new_offsets[-1] == 0:
        return np.empty(0, dtype=np.int32), new_offsets
    gather = np.repeat(starts - new_offsets[:-1], lengths) + np.arange(new_offsets[-1])
    return np.asarray(terms[gather], dtype=np.int32), new_offsets


def in_sorted(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    """Membership of ``values`` in an ascending array (faster than np.isin for a sorted set)."""
    if sorted_set.size == 0 or values.size == 0:
        return np.zeros(values.size, dtype=bool)
    pos = np.searchsorted(sorted_set, values)
    pos[pos == sorted_set.size] = 0
    return sorted_set[pos] == values
