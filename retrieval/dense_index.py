"""The dense (FAISS) index over chunk embeddings, kept in step with the store's change log.

Vectors are computed once: ``apply`` takes a chunk's vector from the store when it is there, embeds
only the missing ones and writes them back, so a rebuild (``reset`` + catch-up, a different FAISS
kind, a lost index file) never re-embeds. FAISS ids are the store's chunk ids, which are never reused.

Kinds: ``flat`` (exact inner product, default), ``hnsw`` (graph; cannot delete, so deleted ids are
tombstones filtered at query time until :meth:`compact` rebuilds it), ``ivf`` (exact until enough
vectors exist to train it, then inverted lists; deletes work).

On disk: ``<dir>/manifest.json`` names the current index file and holds applied_seq, embedder name,
dim and kind. A commit writes a new index file, fsyncs it, atomically replaces the manifest, then
deletes the files it no longer names; a crash at any point leaves the previous, consistent state.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import faiss
import numpy as np

from chronorag.indexing import DerivedIndex
from chronorag.retrieval import dense_files
from chronorag.retrieval.embedder import Embedder
from chronorag.retrieval.tokenize import detect_language
from chronorag.store import Store
from chronorag.types import Chunk

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivf")


class DenseIndexError(RuntimeError):
    """Bad arguments to the dense index (unknown kind, wrong query shape...)."""


@dataclass(frozen=True)
class DenseParams:
    """Tuning knobs; the defaults suit 10^4-10^6 chunks of 384-dim MiniLM vectors."""

    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    ivf_train_min: int = 4096  # stay exact (flat) below this many vectors
    nprobe: int = 16
    exact_filter_limit: int = 20000  # hnsw/ivf: filters this selective are searched exactly
    embed_batch: int = 256  # chunks embedded (and saved to the store) per step
    compact_ratio: float = 0.25  # hnsw: rebuild once tombstones exceed this share


class DenseIndex(DerivedIndex):
    name = "dense"
    read_backlog = 64  # embedding runs at tens of chunks a second on a small CPU

    def __init__(
        self,
        directory: Path | str,
        embedder: Embedder,
        store: Store,
        kind: str = "flat",
        params: DenseParams = DenseParams(),
        threads: int | None = None,
        progress: bool = False,
    ) -> None:
        if kind not in KINDS:
            raise DenseIndexError(f"dense index kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.store = store
        self.kind = kind
        self.params = params
        self.progress = progress
        # Bulk work (HNSW inserts, IVF training) uses every core; single queries gain nothing from
        # threads, and idle OpenMP workers spinning would steal CPU from the torch embedder.
        self.bulk_threads = threads or max(1, min(os.cpu_count() or 1, 8))
        self._lock = threading.RLock()
        self._manifest_mtime: float | None = None
        self._step = None  # catch_up's progress while a window is applied
        self._load()

    # ------------------------------------------------------------------ state
    def _empty(self) -> None:
        self._index = self._new_flat() if self.kind in ("flat", "ivf") else self._new_hnsw()
        self._live: set[int] = set()
        self._tombstones: set[int] = set()
        self._applied_seq = 0
        self._file: str | None = None
        self._dirty = True

    def _new_flat(self):
        return faiss.IndexIDMap2(faiss.IndexFlatIP(self.embedder.dim))

    def _new_hnsw(self):
        hnsw = faiss.IndexHNSWFlat(self.embedder.dim, self.params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.params.ef_construction
        hnsw.hnsw.efSearch = self.params.ef_search
        return faiss.IndexIDMap2(hnsw)

    @property
    def applied_seq(self) -> int:
        return self._applied_seq

    @property
    def trained(self) -> bool:
        """ivf only: whether the inverted lists are in use (else it is still exact)."""
        return isinstance(self._index, faiss.IndexIVF)

    def __len__(self) -> int:
        return len(self._live) - len(self._tombstones)

    # ------------------------------------------------------------------ loading
    def _load(self) -> None:
        with self._lock:
            self._empty()
            self._manifest_mtime = dense_files.manifest_mtime(self.directory)
            manifest = dense_files.read_manifest(self.directory)
            if manifest is None:
                return
            expected = {
                "version": dense_files.FORMAT_VERSION,
                "embedder": self.embedder.name,
                "dim": self.embedder.dim,
                "kind": self.kind,
            }
            stale = {k: manifest.get(k) for k, v in expected.items() if manifest.get(k) != v}
            if stale:
                log.info("dense index was built with %s; rebuilding from stored vectors", stale)
                return
            loaded = dense_files.load(self.directory, manifest)
            if loaded is None or loaded.index.d != self.embedder.dim:
                return
            self._index = loaded.index
            self._live = set(self._stored_ids().tolist())
            self._tombstones = set(loaded.tombstones.tolist())
            self._applied_seq = int(manifest["applied_seq"])
            self._file = manifest["file"]
            self._dirty = False
            self._configure_search()

    def _stored_ids(self) -> np.ndarray:
        if isinstance(self._index, faiss.IndexIVF):
            inv = self._index.invlists
            parts = [
                faiss.rev_swig_ptr(inv.get_ids(i), inv.list_size(i)).copy()
                for i in range(self._index.nlist)
                if inv.list_size(i)
            ]
            return np.concatenate(parts) if parts else np.empty(0, np.int64)
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def _configure_search(self) -> None:
        if isinstance(self._index, faiss.IndexIVF):
            self._index.nprobe = min(self.params.nprobe, self._index.nlist)
        elif self.kind == "hnsw":
            faiss.downcast_index(self._index.index).hnsw.efSearch = self.params.ef_search

    def refresh(self) -> bool:
        """Reload if another process committed a newer index; returns whether it reloaded."""
        mtime = dense_files.manifest_mtime(self.directory)
        if mtime is None or mtime == self._manifest_mtime:
            return False
        with self._lock:
            if self._dirty:
                return False  # uncommitted local changes: this process is the writer
            self._load()
        return True

    # ------------------------------------------------------------------ updates
    @contextmanager
    def _threads(self, n: int) -> Iterator[None]:
        before = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
        try:
            yield
        finally:
            faiss.omp_set_num_threads(before)

    def report_progress(self, step) -> None:
        self._step = step

    def covers(self, text: str) -> bool:
        """Whether the embedder was trained on the text's language: vectors of other text are
        noise (the questions in that language do not use vectors either), so they are not made.
        An embedder that covers it (a switch to e5-small) is another model whose index starts
        empty and embeds them then."""
        languages = self.embedder.languages
        if not languages:
            return True
        language = detect_language(text)
        return language == "mixed" or language in languages

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        with self._lock:
            if deleted:
                self._delete([int(c) for c in deleted])
            todo = [c for c in added if c.chunk_id not in self._live and self.covers(c.text)]
            if todo:
                ids, vecs = self._vectors_for(todo)
                self._add(ids, vecs)
            if deleted or todo:
                self._dirty = True

    def _vectors_for(self, chunks: Sequence[Chunk]) -> tuple[np.ndarray, np.ndarray]:
        """Vectors for ``chunks`` in order: from the store where present, else embedded and saved."""
        dim = self.embedder.dim
        ids = np.fromiter((c.chunk_id for c in chunks), dtype=np.int64, count=len(chunks))
        have = self.store.embeddings(self.embedder.name, ids.tolist())
        out = np.empty((len(chunks), dim), dtype=np.float32)
        missing: list[int] = []
        for row, cid in enumerate(ids.tolist()):
            vec = have.get(cid)
            if vec is not None and vec.shape == (dim,) and np.isfinite(vec).all():
                out[row] = vec
            else:
                missing.append(row)
        if missing:
            bar = None
            if self.progress:
                from tqdm.auto import tqdm

                bar = tqdm(total=len(missing), desc="embedding chunks", unit="chunk")
            step = self.params.embed_batch
            try:
                for start in range(0, len(missing), step):
                    rows = missing[start : start + step]
                    vecs = np.asarray(
                        self.embedder.encode([chunks[r].text for r in rows]), dtype=np.float32
                    )
                    if vecs.shape != (len(rows), dim):
                        raise DenseIndexError(
                            f"embedder {self.embedder.name} returned shape {vecs.shape}, "
                            f"expected ({len(rows)}, {dim})"
                        )
                    out[rows] = vecs
                    # saved per step: an interrupted catch-up keeps the work it finished
                    self.store.put_embeddings(
                        self.embedder.name, {int(ids[r]): vecs[i] for i, r in enumerate(rows)}
                    )
                    if bar is not None:
                        bar.update(len(rows))
                    if self._step is not None:
                        self._step(len(rows))
            finally:
                if bar is not None:
                    bar.close()
        return ids, out

    def _add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        with self._threads(self.bulk_threads):
            self._index.add_with_ids(np.ascontiguousarray(vecs), ids)
        self._live.update(ids.tolist())
        if self.kind == "ivf" and not self.trained and len(self._live) >= self.params.ivf_train_min:
            self._train_ivf()

    def _delete(self, ids: list[int]) -> None:
        present = [i for i in ids if i in self._live and i not in self._tombstones]
        if not present:
            return
        if self.kind == "hnsw":
            self._tombstones.update(present)
            if len(self._tombstones) > self.params.compact_ratio * max(len(self._live), 1):
                self._rebuild()
            return
        self._index.remove_ids(faiss.IDSelectorBatch(np.asarray(present, dtype=np.int64)))
        self._live.difference_update(present)

    def _all_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of every live entry, read back from FAISS (flat storage) or the store."""
        ids = self._stored_ids()
        if self._tombstones:
            ids = ids[~np.isin(ids, np.fromiter(self._tombstones, np.int64))]
        if isinstance(self._index, faiss.IndexIDMap2):
            flat = faiss.downcast_index(self._index.index)
            storage = flat if isinstance(flat, faiss.IndexFlat) else faiss.downcast_index(flat.storage)
            all_ids = faiss.vector_to_array(self._index.id_map)
            xb = storage.reconstruct_n(0, storage.ntotal)
            keep = np.isin(all_ids, ids)
            return all_ids[keep].astype(np.int64), xb[keep]
        have = self.store.embeddings(self.embedder.name, ids.tolist())
        ids = np.asarray([i for i in ids.tolist() if i in have], dtype=np.int64)
        return ids, np.vstack([have[i] for i in ids.tolist()]) if len(ids) else np.empty((0, self.embedder.dim), np.float32)

    def _train_ivf(self) -> None:
        ids, vecs = self._all_vectors()
        n = len(ids)
        nlist = int(max(16, min(4 * np.sqrt(n), n // 39, 65536)))
        quantizer = faiss.IndexFlatIP(self.embedder.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.embedder.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        with self._threads(self.bulk_threads):
            ivf.train(vecs)
            ivf.add_with_ids(vecs, ids)
        ivf.nprobe = min(self.params.nprobe, nlist)
        self._index = ivf
        self._quantizer = quantizer  # keep the Python object alive with the index

    def _rebuild(self) -> None:
        ids, vecs = self._all_vectors()
        self._index = self._new_hnsw() if self.kind == "hnsw" else self._new_flat()
        self._live = set()
        self._tombstones = set()
        if len(ids):
            self._add(ids, vecs)
        self._dirty = True

    def compact(self) -> None:
        """Rebuild without tombstones (hnsw) / retrain on today's vectors (ivf), and persist."""
        with self._lock:
            if self.kind == "flat":
                return
            self._rebuild()
            self._write(self._applied_seq)

    def reset(self) -> None:
        with self._lock:
            self._empty()

    # ------------------------------------------------------------------ persistence
    def commit(self, seq: int) -> None:
        with self._lock:
            if seq < self._applied_seq:
                raise DenseIndexError(f"commit seq {seq} is behind applied seq {self._applied_seq}")
            self._write(seq)

    def _write(self, seq: int) -> None:
        meta = {
            "embedder": self.embedder.name,
            "dim": self.embedder.dim,
            "kind": self.kind,
            "trained": self.trained,
            "vectors": len(self),
        }
        self._file = dense_files.commit(
            self.directory,
            seq,
            meta,
            self._index if self._dirty else None,
            self._file,
            np.fromiter(sorted(self._tombstones), np.int64, count=len(self._tombstones)),
        )
        self._manifest_mtime = dense_files.manifest_mtime(self.directory)
        self._applied_seq = int(seq)
        self._dirty = False

    # ------------------------------------------------------------------ search
    def search(
        self, query: str | np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The best ``k`` chunk ids (and inner-product scores) among ``allowed`` (sorted int64) if given."""
        if k < 1:
            raise DenseIndexError(f"k must be >= 1, got {k}")
        q = self._query_vector(query)
        empty = (np.empty(0, np.int64), np.empty(0, np.float32))
        with self._lock:
            if len(self) == 0:
                return empty
            sel_ids = None
            if allowed is not None:
                sel_ids = np.asarray(allowed, dtype=np.int64)
                if self._tombstones:
                    sel_ids = sel_ids[~np.isin(sel_ids, np.fromiter(self._tombstones, np.int64))]
                if sel_ids.size == 0:
                    return empty
            want = min(k, len(self) if sel_ids is None else sel_ids.size)
            approximate = self.kind == "hnsw" or self.trained
            if approximate and sel_ids is not None and sel_ids.size <= self.params.exact_filter_limit:
                return self._exact(q, sel_ids, k)
            ids, scores = self._faiss_search(q, k, sel_ids)
            if approximate and len(ids) < want:
                # a filter (or tombstones) starved the approximate search: search much wider
                ids, scores = self._faiss_search(q, k, sel_ids, wide=True)
            return ids, scores

    def _query_vector(self, query: str | np.ndarray) -> np.ndarray:
        if isinstance(query, str):
            if not query.strip():
                raise DenseIndexError("query is empty")
            vec = self.embedder.encode_query(query)
        else:
            vec = query
        q = np.ascontiguousarray(np.asarray(vec, dtype=np.float32).reshape(1, -1))
        if q.shape[1] != self.embedder.dim:
            raise DenseIndexError(f"query vector has dim {q.shape[1]}, index has {self.embedder.dim}")
        return q

    def _faiss_search(
        self, q: np.ndarray, k: int, sel_ids: np.ndarray | None, wide: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        selector = None
        if sel_ids is not None:
            selector = faiss.IDSelectorBatch(sel_ids)
        elif self._tombstones:
            selector = faiss.IDSelectorNot(
                faiss.IDSelectorBatch(np.fromiter(sorted(self._tombstones), np.int64))
            )
        if isinstance(self._index, faiss.IndexIVF):
            # every list when wide: exact for IVF-Flat
            params = faiss.SearchParametersIVF(nprobe=self._index.nlist if wide else self._index.nprobe)
        elif self.kind == "hnsw":
            ef = max(self.params.ef_search, 2 * k)
            params = faiss.SearchParametersHNSW(efSearch=max(8 * ef, 1024) if wide else ef)
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector
        k_eff = min(k, self._index.ntotal)
        with self._threads(1):
            scores, ids = self._index.search(q, k_eff, params=params)
        keep = ids[0] >= 0
        return ids[0][keep].astype(np.int64), scores[0][keep].astype(np.float32)

    def _exact(self, q: np.ndarray, sel_ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        have = self.store.embeddings(self.embedder.name, sel_ids.tolist())
        ids = np.asarray([i for i in sel_ids.tolist() if i in have and i in self._live], dtype=np.int64)
        if ids.size == 0:
            return np.empty(0, np.int64), np.empty(0, np.float32)
        scores = np.vstack([have[i] for i in ids.tolist()]) @ q[0]
        top = np.argsort(-scores, kind="stable")[:k]
        return ids[top], scores[top].astype(np.float32)

    # ------------------------------------------------------------------ info
    def stats(self) -> dict:
        with self._lock:
            info = {
                "kind": self.kind,
                "vectors": len(self),
                "embedder": self.embedder.name,
                "dim": self.embedder.dim,
                "applied_seq": self._applied_seq,
                "file_bytes": (self.directory / self._file).stat().st_size
                if self._file and (self.directory / self._file).exists()
                else 0,
            }
            if self.kind == "hnsw":
                info["tombstones"] = len(self._tombstones)
            if self.kind == "ivf":
                info["trained"] = self.trained
                if self.trained:
                    info["nlist"] = int(self._index.nlist)
                    info["nprobe"] = int(self._index.nprobe)
            return info
