"""The incremental ingest job: documents in, chunks in the store, nothing done twice.

Each batch of documents is hashed, compared with the store, chunked only if new or changed, and
written in one store transaction. Indexes are not touched here: they catch up from the store's
change log afterwards (see chronorag.indexing), which is what makes a kill -9 at any point safe.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

from chronorag.ingest.checks import document_problem
from chronorag.store import DocumentWrite, Store
from chronorag.types import ChunkDraft, Document, LoadError

_worker_chunker = None
# Part of every document's content hash: bump it whenever chunker.py could cut the same text
# differently, and every document re-chunks at its next ingest (stored vectors are reused).
CHUNKING_VERSION = "v3-char-cap"
BATCH_COUNTS = ("new", "changed", "unchanged", "failed")
# (cursor of the batch's transaction, {new, changed, unchanged, failed} of the batch, its errors):
# an ingestion job's bookkeeping, committed with the batch's documents or not at all.
BatchHook = Callable[[sqlite3.Cursor, dict[str, int], list[LoadError]], None]


@dataclass
class IngestReport:
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    chunks: int = 0
    pruned: int | None = None  # documents deleted because their folder no longer holds them (--prune)
    errors: list[LoadError] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)

    def add_time(self, stage: str, seconds: float) -> None:
        self.stage_seconds[stage] = self.stage_seconds.get(stage, 0.0) + seconds

    @property
    def documents(self) -> int:
        return self.new + self.changed + self.unchanged

    def summary_line(self) -> str:
        pruned = f" pruned={self.pruned}" if self.pruned is not None else ""
        return (
            f"docs new={self.new} changed={self.changed} unchanged={self.unchanged} "
            f"failed={self.failed} chunks_written={self.chunks}{pruned}"
        )

    def to_dict(self) -> dict:
        return {
            "new": self.new,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "failed": self.failed,
            "chunks_written": self.chunks,
            "pruned": self.pruned,
            "errors": [
                {"source": e.source, "line": e.line, "doc_id": e.doc_id, "message": e.message}
                for e in self.errors
            ],
            "stage_seconds": {k: round(v, 3) for k, v in self.stage_seconds.items()},
        }


def content_hash(doc: Document, chunker_signature: str) -> str:
    """Everything that changes what we store for a document, including how it is chunked."""
    payload = json.dumps(
        [
            doc.text,
            doc.title,
            doc.published_at.isoformat() if doc.published_at else None,
            doc.source,
            doc.metadata,
            chunker_signature,
        ],
        ensure_ascii=False,
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def chunker_signature(chunk_size: int, chunk_overlap: int) -> str:
    """What :func:`content_hash` mixes in for these chunking settings (as :func:`ingest_documents`)."""
    return f"chunker:{CHUNKING_VERSION}:{chunk_size}:{chunk_overlap}"


def exit_with_parent(parent_pid: int) -> None:
    """In a forked worker: exit as soon as ``parent_pid`` is gone, even killed by SIGKILL. A worker
    left behind would keep the parent's inherited descriptors, the data directory's locks among
    them, and block the restarted writer. Polling getppid rather than PR_SET_PDEATHSIG, which
    fires when the forking *thread* ends: a pool made by a server's request thread would die with it."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.2)
        os._exit(1)

    if os.getppid() != parent_pid:  # died between the fork and now
        os._exit(1)
    threading.Thread(target=watch, name="chronorag-parent-watch", daemon=True).start()


def _init_worker(chunk_size: int, chunk_overlap: int, parent_pid: int) -> None:
    global _worker_chunker
    from chronorag.ingest.chunker import Chunker

    exit_with_parent(parent_pid)

    _worker_chunker = Chunker(chunk_size=chunk_size, chunk_overlap=chunk_overlap)


def _split_with_header(chunker, title: str | None, text: str) -> list[ChunkDraft]:
    """Chunk the body; a titled document's chunks start with its title (a contextual header), so a
    chunk from the middle of a long transcript still names its company and period. Character
    spans keep pointing into the body."""
    drafts = chunker.split(text)
    if not title or not title.strip():
        return drafts
    header = " ".join(title.split())
    extra = chunker.count_tokens(header)
    return [
        ChunkDraft(d.ord, f"{header}\n{d.text}", d.char_start, d.char_end, d.n_tokens + extra)
        for d in drafts
    ]


def _split_in_worker(items: list[tuple[str | None, str]]) -> list[list[ChunkDraft]]:
    assert _worker_chunker is not None
    return [_split_with_header(_worker_chunker, title, text) for title, text in items]


class _ChunkRunner:
    """Chunks a batch in-process or across a fork pool (chunking dominates ingest CPU time).

    Started on the first batch that has something to chunk: importing llama-index takes seconds, which
    a re-ingest of unchanged documents (a no-op) should not pay, and neither should it fork workers.
    """

    def __init__(self, chunk_size: int, chunk_overlap: int, workers: int) -> None:
        self.chunk_size = chunk_size
        self.chunk_overlap = chunk_overlap
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._local = None

    def __enter__(self) -> "_ChunkRunner":
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    @property
    def started(self) -> bool:
        return self._pool is not None or self._local is not None

    def _start(self) -> None:
        if self.workers > 1:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("fork"),
                initializer=_init_worker,
                initargs=(self.chunk_size, self.chunk_overlap, os.getpid()),
            )
        else:
            from chronorag.ingest.chunker import Chunker

            self._local = Chunker(chunk_size=self.chunk_size, chunk_overlap=self.chunk_overlap)

    def split(self, items: list[tuple[str | None, str]]) -> list[list[ChunkDraft]]:
        """Chunk (title, text) pairs."""
        if not self.started:
            self._start()
        if self._pool is None:
            return [_split_with_header(self._local, title, text) for title, text in items]
        step = max(1, len(items) // (self.workers * 4))
        parts = [items[i : i + step] for i in range(0, len(items), step)]
        out: list[list[ChunkDraft]] = []
        for res in self._pool.map(_split_in_worker, parts):
            out.extend(res)
        return out


def ingest_documents(
    store: Store,
    records: Iterable[Document | LoadError],
    chunk_size: int = 256,
    chunk_overlap: int = 32,
    batch_size: int = 512,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
    on_batch: BatchHook | None = None,
) -> IngestReport:
    """Store new and changed documents with their chunks; report what happened to each.

    ``on_batch(cursor, counts, errors)`` runs once per batch inside the transaction that writes
    the batch's documents (its own transaction when the batch writes none: all unchanged or
    failed); every record of the batch is in exactly one of ``counts``."""
    report = IngestReport()
    seen: set[str] = set()  # ids taken in this call: a later record with one is reported, not applied
    signature = chunker_signature(chunk_size, chunk_overlap)
    source_iter = iter(records)
    with _ChunkRunner(chunk_size, chunk_overlap, workers) as runner:
        while True:
            t0 = time.perf_counter()
            batch = []
            for item in source_iter:
                batch.append(item)
                if len(batch) >= batch_size:
                    break
            report.add_time("parse", time.perf_counter() - t0)
            if not batch:
                break
            _ingest_batch(store, batch, runner, signature, report, seen, on_batch)
            if progress is not None:
                progress(len(batch))
    return report


def _ingest_batch(
    store: Store, batch: list, runner: _ChunkRunner, signature: str, report: IngestReport, seen: set[str],
    on_batch: BatchHook | None = None,
) -> None:
    counts = dict.fromkeys(BATCH_COUNTS, 0)
    errors: list[LoadError] = []
    docs: dict[str, Document] = {}
    for item in batch:
        if not isinstance(item, LoadError):  # Documents built in code skip the loaders' checks
            problem = document_problem(item)
            if problem:
                doc_id = getattr(item, "doc_id", None)
                item = LoadError("<python>", None, doc_id if isinstance(doc_id, str) else None, problem)
            elif item.doc_id in seen:  # as the loaders do: the first record of an id wins
                item = LoadError("<python>", None, item.doc_id, "duplicate id in this insert (the first is kept)")
        if isinstance(item, LoadError):
            errors.append(item)
        else:
            seen.add(item.doc_id)
            docs[item.doc_id] = item
    counts["failed"] = len(errors)
    report.failed += len(errors)
    report.errors.extend(errors)
    if not docs:
        _hook_alone(store, on_batch, counts, errors)
        return
    hashes = {doc_id: content_hash(doc, signature) for doc_id, doc in docs.items()}
    stored = store.content_hashes(docs)
    todo = [d for d in docs.values() if stored.get(d.doc_id) != hashes[d.doc_id]]
    counts["unchanged"] = len(docs) - len(todo)
    report.unchanged += len(docs) - len(todo)
    if not todo:
        _hook_alone(store, on_batch, counts, errors)
        return
    t0 = time.perf_counter()
    drafts = runner.split([(d.title, d.text) for d in todo])
    report.add_time("chunk", time.perf_counter() - t0)
    t0 = time.perf_counter()
    writes = [DocumentWrite(d, hashes[d.doc_id], ch) for d, ch in zip(todo, drafts)]

    def before_commit(cur: sqlite3.Cursor, outcome: dict[str, str]) -> None:
        batch_counts = dict(counts)
        for state in outcome.values():
            batch_counts[state] += 1
        on_batch(cur, batch_counts, errors)

    outcome = store.write_documents(writes, before_commit if on_batch is not None else None)
    report.add_time("store", time.perf_counter() - t0)
    for w in writes:
        state = outcome[w.document.doc_id]
        if state == "new":
            report.new += 1
        elif state == "changed":
            report.changed += 1
        else:
            report.unchanged += 1
            continue
        report.chunks += len(w.chunks)


def _hook_alone(store: Store, on_batch: BatchHook | None, counts: dict[str, int], errors: list[LoadError]) -> None:
    if on_batch is not None:
        with store.transaction() as cur:
            on_batch(cur, counts, errors)
