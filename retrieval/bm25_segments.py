"""An incrementally updatable BM25 index: immutable bm25s segments, tombstones, background merges.

bm25s cannot update an index in place, so a commit never rebuilds the whole index: it writes one
new small segment for the chunks added since the last commit, and deletions become tombstones
(chunk ids hidden at query time). Merges rebuild one segment from the stored token lists of the
surviving documents (see chronorag.retrieval.bm25_policy for when); a big merge runs in a
background thread while searches keep using the old segments until the merged one is swapped in
under a lock.

Scores are comparable across segments: every segment is scored with global document
frequencies (chronorag.retrieval.bm25_scoring.search_segments). As in Lucene, tombstoned
documents still count in those frequencies until a merge drops them. Length normalisation is
baked into each segment's stored scores (as in bm25s); a new segment uses the average chunk
length of the whole index at the time it is written, so a chunk in a small delta segment scores
as it would in one index, and older segments drift only as far as that average moves until the
next merge rebuilds them.

On disk: segment directories (never modified once written), one tombstones file per change, and
``manifest.json`` naming the live ones together with ``applied_seq``, replaced atomically. A crash
at any point leaves the previous manifest valid; files it does not name are deleted on open.
Ids already indexed (live or deleted) are ignored when added again: the store never reuses ids.
The files always hold exactly the state at ``applied_seq``: a background merge only drops
documents whose deletion was committed, and persists only committed tombstones.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from chronorag.indexing import DerivedIndex
from chronorag.retrieval.index_files import dir_lock, file_stamp, remove_path, remove_unreferenced
from chronorag.retrieval.bm25_manifest import (
    MANIFEST,
    Manifest,
    ManifestError,
    read_manifest,
    read_tombstones,
    write_manifest,
    write_tombstones,
)
from chronorag.retrieval.bm25_policy import plan_merge
from chronorag.retrieval.bm25_scoring import search_segments
from chronorag.retrieval.bm25_segment import (
    Segment,
    SegmentError,
    gather_docs,
    in_sorted,
    merge_documents,
    write_segment,
)
from chronorag.retrieval.tokenize import Tokenizer, merge_encoded
from chronorag.types import Chunk

log = logging.getLogger(__name__)

__all__ = ["MANIFEST", "SegmentedBM25"]

_NO_IDS = np.empty(0, dtype=np.int64)
_NO_HITS = (np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32))


class SegmentedBM25(DerivedIndex):
    """The 'bm25' derived index (see chronorag.indexing.DerivedIndex) and a Searcher for fusion."""

    name = "bm25"

    def __init__(
        self,
        directory: Path,
        tokenizer: Tokenizer | None = None,
        k1: float = 1.5,
        b: float = 0.75,
        max_segments: int = 8,
        delta_fraction: float = 0.2,
        background: bool = True,
        workers: int | None = None,
    ) -> None:
        if max_segments < 1:
            raise ValueError(f"max_segments must be >= 1, got {max_segments}")
        if not 0 < delta_fraction <= 1:
            raise ValueError(f"delta_fraction must be in (0, 1], got {delta_fraction}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer = tokenizer or Tokenizer()
        self.k1, self.b = float(k1), float(b)
        self.max_segments = max_segments
        self.delta_fraction = delta_fraction
        self.background = background
        self.workers = workers if workers is not None else (os.cpu_count() or 1)
        self.last_merge_error: str | None = None
        self._lock = threading.RLock()
        self._merge_thread: threading.Thread | None = None
        self._merging: frozenset[str] = frozenset()
        self._epoch = 0  # bumped by reset/reload: a merge started before is discarded
        self._names = 0
        self._load()
        self._collect_garbage()

    # ------------------------------------------------------------ state i/o
    def _clear(self) -> None:
        self._segments: list[Segment] = []
        self._dead = _NO_IDS  # what searches hide: includes deletes applied but not yet committed
        self._dead_saved = _NO_IDS  # tombstones as of applied_seq (what the manifest holds)
        self._dead_file: str | None = None
        self._applied_seq = 0
        self._pending: list[tuple[np.ndarray, list[str], np.ndarray, np.ndarray]] = []
        self._dirty = False
        self._reset_pending = False  # reset() ran and no commit has replaced the manifest yet

    def _load(self) -> None:
        """Adopt what the manifest names; anything unusable means 'start empty' (catch-up rebuilds)."""
        with self._lock:
            self._epoch += 1
            self._clear()
            self._manifest: Manifest | None = None
            self._unreadable_stamp = None
            try:
                manifest = read_manifest(self.directory)
            except ManifestError as exc:
                log.warning("%s; the BM25 index will be rebuilt", exc)
                with contextlib.suppress(OSError):  # warn once, not on every reload check
                    self._unreadable_stamp = file_stamp(self.directory / MANIFEST)
                return
            if manifest is None:
                return
            self._manifest = manifest
            if not manifest.matches(self.tokenizer.signature, self.k1, self.b):
                log.warning("BM25 index was built with other settings; it will be rebuilt")
                return
            try:
                segments = [Segment.load(self.directory / n) for n in manifest.segments]
                dead = read_tombstones(self.directory, manifest.tombstones)
            except (SegmentError, OSError, ValueError) as exc:
                log.warning("BM25 index incomplete (%s); it will be rebuilt", exc)
                return
            self._segments, self._dead_file = segments, manifest.tombstones
            self._dead = self._dead_saved = dead
            self._applied_seq = manifest.applied_seq

    def _maybe_reload(self) -> None:
        """Pick up a manifest another process committed, unless this one holds unsaved changes."""
        try:
            stamp = file_stamp(self.directory / MANIFEST)
        except FileNotFoundError:
            return
        current = self._manifest.stamp if self._manifest else self._unreadable_stamp
        if stamp != current and not (self._pending or self._dirty or self._merge_running()):
            self._load()

    def _persist(
        self, segments: list[Segment], applied_seq: int, dead_saved: np.ndarray, new_dead: bool
    ) -> None:
        """Write tombstones (if ``new_dead``) and the manifest; adopt the state only once both are
        durable, then delete the files that fell out. Lock held."""
        previous = self._manifest
        generation = (previous.generation if previous else 0) + 1
        dead_file = write_tombstones(self.directory, generation, dead_saved) if new_dead else self._dead_file
        manifest = Manifest(
            generation=generation,
            applied_seq=applied_seq,
            segments=tuple(s.name for s in segments),
            tombstones=dead_file,
            tokenizer=self.tokenizer.signature,
            k1=self.k1,
            b=self.b,
        )
        self._manifest = write_manifest(self.directory, manifest)
        self._segments, self._applied_seq = segments, applied_seq
        self._dead_saved, self._dead_file = dead_saved, dead_file
        self._dirty = not np.array_equal(self._dead, self._dead_saved)  # deletes still uncommitted
        for name in (previous.files if previous else set()) - manifest.files:
            remove_path(self.directory / name)

    def _collect_garbage(self) -> None:
        """Delete files no manifest names (partial segments of a crash), unless someone is writing."""
        with dir_lock(self.directory, exclusive=True, wait=False) as alone:
            if not alone:
                return
            try:  # another process may have committed since we loaded: trust the file, not memory
                manifest = read_manifest(self.directory)
            except ManifestError:
                return  # leave everything for a person to inspect
            remove_unreferenced(self.directory, ("seg-", "tomb-"), manifest.files if manifest else ())

    def _segment_name(self) -> str:
        with self._lock:
            self._names += 1
            generation = self._manifest.generation if self._manifest else 0
            return f"seg-{generation + 1:08d}-{self._names:04d}-{os.urandom(3).hex()}"

    def _write(
        self, ids: np.ndarray, words: list[str], terms: np.ndarray, offsets: np.ndarray, beside: Sequence[Segment] = ()
    ) -> Segment:
        """Write a segment that will sit ``beside`` these; its length normalisation uses the average
        chunk length over all of them (deleted chunks included, as their document frequencies are)."""
        n_docs = ids.size + sum(s.n_docs for s in beside)
        n_tokens = int(offsets[-1]) + sum(int(s.offsets[-1]) for s in beside if s.offsets.size)
        avgdl = n_tokens / n_docs if beside and n_docs and n_tokens else None
        return write_segment(
            self.directory, self._segment_name(), ids, words, terms, offsets,
            self.k1, self.b, self.tokenizer.signature, avgdl,
        )

    # ---------------------------------------------------------- DerivedIndex
    @property
    def applied_seq(self) -> int:
        self._maybe_reload()
        return self._applied_seq

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        """Tokenise new chunks (searchable after commit); hide deleted ids at once."""
        del_ids = np.unique(np.asarray(list(deleted), dtype=np.int64))
        with self._lock:
            if del_ids.size:
                self._drop_pending(del_ids)
                indexed = np.zeros(del_ids.size, dtype=bool)
                for seg in self._segments:
                    indexed |= in_sorted(del_ids, seg.chunk_ids)
                fresh = del_ids[indexed & ~in_sorted(del_ids, self._dead)]  # unknown ids: no-op
                if fresh.size:
                    self._dead = np.union1d(self._dead, fresh)
                    self._dirty = True
            latest = {c.chunk_id: c for c in added}  # an id repeated in the batch: last copy wins
            ids = np.fromiter(latest, dtype=np.int64, count=len(latest))
            known = self._known(ids)
        new = [latest[int(i)] for i in ids[~known]]
        if new:
            encoded = self.tokenizer.encode_many([c.text for c in new], workers=self.workers)
            with self._lock:
                self._pending.append((ids[~known], *encoded))

    def _known(self, ids: np.ndarray) -> np.ndarray:
        known = np.zeros(ids.size, dtype=bool)
        for seg in self._segments:
            known |= in_sorted(ids, seg.chunk_ids)
        for pending_ids, *_ in self._pending:
            known |= np.isin(ids, pending_ids)
        return known

    def _drop_pending(self, del_ids: np.ndarray) -> None:
        kept = []
        for ids, words, terms, offsets in self._pending:
            gone = np.isin(ids, del_ids)
            if gone.any():
                rows = np.flatnonzero(~gone)
                terms, offsets = gather_docs(terms, offsets, rows)
                ids = ids[rows]
            if ids.size:
                kept.append((ids, words, terms, offsets))
        self._pending = kept

    def commit(self, seq: int) -> None:
        """Write one segment for the pending chunks, then the manifest (with ``seq``) atomically."""
        with self._lock:
            pending, epoch = self._pending, self._epoch
            if not pending and not self._dirty and seq == self._applied_seq and self._manifest:
                return
        with dir_lock(self.directory, exclusive=False):
            segment = None
            if pending:
                words, terms, offsets = merge_encoded([p[1:] for p in pending])
                with self._lock:
                    beside = list(self._segments)
                segment = self._write(np.concatenate([p[0] for p in pending]), words, terms, offsets, beside)
            with self._lock:
                try:
                    if epoch != self._epoch:
                        raise RuntimeError("BM25 index was reset or reloaded during a commit")
                    segments = self._segments + ([segment] if segment is not None else [])
                    new_dead = self._reset_pending or not np.array_equal(self._dead_saved, self._dead)
                    self._persist(segments, int(seq), self._dead, new_dead)
                except BaseException:
                    if segment is not None:  # nothing names it; the pending chunks stay pending
                        remove_path(segment.path)
                    raise
                self._pending = [p for p in self._pending if not any(p is q for q in pending)]
                self._reset_pending = False
        self.maybe_merge_in_background()

    def reset(self) -> None:
        """Forget everything in memory; the old files go when the next commit replaces the manifest."""
        with self._lock:
            self._epoch += 1
            self._clear()
            self._dirty = self._reset_pending = True

    # ---------------------------------------------------------------- search
    def search(
        self, query: str, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` chunks (ids, scores) containing a query term; only ``allowed`` ids if given."""
        if k <= 0:
            return _NO_HITS
        if allowed is not None:
            allowed = np.asarray(allowed, dtype=np.int64)
            if allowed.size == 0:
                return _NO_HITS
            if allowed.size > 1 and np.any(allowed[1:] < allowed[:-1]):
                allowed = np.unique(allowed)
        self._maybe_reload()
        counts = Counter(self.tokenizer.tokenize(query))
        with self._lock:
            segments, dead = list(self._segments), self._dead
        if not counts or not segments:
            return _NO_HITS
        return search_segments(segments, dead, counts, k, allowed)

    # ---------------------------------------------------------------- merges
    def merge(self) -> None:
        """Merge every segment into one now, dropping deleted documents (waits for a running merge)."""
        self.wait_for_merge()
        with self._lock:
            segments, epoch = list(self._segments), self._epoch
        if len(segments) > 1 or (segments and self._dead_saved.size):
            self._merge(segments, epoch)

    def maybe_merge_in_background(self) -> bool:
        """Apply the merge policy (chronorag.retrieval.bm25_policy); True if a merge ran or started."""
        with self._lock:
            segments, epoch = list(self._segments), self._epoch
            running = self._merge_running()
            busy = frozenset(i for i, s in enumerate(segments) if running and s.name in self._merging)
            plan = plan_merge(
                [s.n_docs for s in segments], int(self._dead.size), busy, self.max_segments, self.delta_fraction
            )
            members = [segments[i] for i in plan.members]
            if plan.kind == "full" and self.background:
                self._merging = frozenset(s.name for s in members)
                self._merge_thread = threading.Thread(
                    target=self._merge_quietly, args=(members, epoch), name="bm25-merge", daemon=False
                )  # not a daemon: interpreter exit waits for the merge instead of wasting it
                self._merge_thread.start()
                return True
        if plan.needed:
            self._merge(members, epoch)
        return plan.needed

    def wait_for_merge(self) -> None:
        thread = self._merge_thread
        if thread is not None:
            thread.join()

    def close(self) -> None:
        """Wait for a background merge, then let go of the segments (their memory-mapped files)."""
        self.wait_for_merge()
        with self._lock:
            self._clear()
            self._manifest = None

    def _merge_running(self) -> bool:
        return self._merge_thread is not None and self._merge_thread.is_alive()

    def _merge_quietly(self, segments: list[Segment], epoch: int) -> None:
        try:
            self._merge(segments, epoch)
            self.last_merge_error = None
        except Exception as exc:  # a failed merge leaves the old segments in place: log, do not die
            self.last_merge_error = f"{type(exc).__name__}: {exc}"
            log.warning("BM25 background merge failed: %s", self.last_merge_error)

    def _merge(self, segments: list[Segment], epoch: int) -> None:
        """Replace ``segments`` by one rebuilt from their surviving token lists, then swap atomically."""
        with self._lock:
            dead = self._dead_saved
            names = {s.name for s in segments}
            beside = [s for s in self._segments if s.name not in names]  # a partial merge's neighbours
        ids, words, terms, offsets = merge_documents(segments, dead)
        with dir_lock(self.directory, exclusive=False):
            merged = self._write(ids, words, terms, offsets, beside) if ids.size else None
            with self._lock:
                names = {s.name for s in segments}
                if epoch != self._epoch or not names <= {s.name for s in self._segments}:
                    if merged is not None:  # reset or reloaded meanwhile: the result is stale
                        remove_path(merged.path)
                    return
                position = min(i for i, s in enumerate(self._segments) if s.name in names)
                survivors = [s for s in self._segments if s.name not in names]
                if merged is not None:
                    survivors.insert(position, merged)
                # tombstones of dropped documents go; deletes of merged documents since then stay
                try:
                    self._persist(survivors, self._applied_seq, _still_indexed(self._dead_saved, survivors), True)
                except BaseException:
                    if merged is not None:
                        remove_path(merged.path)
                    raise
                self._dead = _still_indexed(self._dead, survivors)
                self._dirty = not np.array_equal(self._dead, self._dead_saved)

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict:
        with self._lock:
            sizes = [s.n_docs for s in self._segments]
            return {
                "segments": len(sizes),
                "segment_docs": sizes,
                "segment_names": [s.name for s in self._segments],
                "docs": sum(sizes),
                "live_docs": sum(sizes) - int(self._dead.size),
                "deleted": int(self._dead.size),
                "pending": sum(int(p[0].size) for p in self._pending),
                "vocab": max((len(s.vocab) for s in self._segments), default=0),
                "applied_seq": self._applied_seq,
                "merging": self._merge_running(),
                "last_merge_error": self.last_merge_error,
                "tokenizer": self.tokenizer.signature,
            }


def _still_indexed(ids: np.ndarray, segments: Sequence[Segment]) -> np.ndarray:
    keep = np.zeros(ids.size, dtype=bool)
    for seg in segments:
        keep |= in_sorted(ids, seg.chunk_ids)
    return ids[keep]
