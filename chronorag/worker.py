"""The ingestion worker: runs the store's jobs (:mod:`chronorag.jobs`) through the engine.

One per data directory: it holds the directory's writer role (:meth:`DataDir.writer_role`, a
flock the kernel drops when the process dies, even by kill -9) for its whole lifetime. Another
worker, or a ``serve`` started next to it, does not get the role and leaves the jobs to the
holder; readers never need it. The first thing a new holder does is resume any job a crashed one
left ``running``.
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

from chronorag.datadir import WriterRole
from chronorag.jobs import SUBMITTED, Job, JobError, JobQueue, document_from_json, error_of, record_progress
from chronorag.types import Document, LoadError

if TYPE_CHECKING:
    from chronorag.engine import ChronoRAG

__all__ = ["IngestWorker"]

log = logging.getLogger(__name__)

POLL_S = 0.5  # how soon a job submitted by another process is noticed
RETRY_S = 5.0  # pause after a run that could not even record its failure (the store refuses writes)
_PAGE = 256  # job items read at a time
_ItemRow = tuple[int, str, str | None, int | None]  # pos, doc id, item JSON, existed


def _batch_hook(job_n: int, cur: sqlite3.Cursor, counts: dict[str, int], errors: list[LoadError]) -> None:
    record_progress(cur, job_n, sum(counts.values()), counts, [error_of(e) for e in errors])


class IngestWorker:
    """Runs jobs oldest first, each from its last committed batch.

    ``batch``: items per committed step. None: the settings' ``ingest_batch``, all of a job's
    documents in one insert (indexes catch up once, at its end); given: one insert per ``batch``
    documents, the indexes caught up after each, so readers see a long job land piece by piece.
    ``on_finish(job)`` (optional attribute) is called as each job ends."""

    def __init__(self, engine: "ChronoRAG", queue: JobQueue | None = None, batch: int | None = None) -> None:
        if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.engine = engine
        self.queue = queue if queue is not None else JobQueue(engine.store)
        self.batch = batch
        self.on_finish: Callable[[Job], None] | None = None
        self._role: WriterRole | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._running = threading.Lock()  # one run_once at a time, thread or caller

    @property
    def is_writer(self) -> bool:
        """Whether this worker holds the data directory's writer role now."""
        return self._role is not None and self._role.held

    def _take_role(self) -> bool:
        if not self.is_writer:
            self._role = self.engine.data_dir.writer_role()
        return self._role is not None

    def _release_role(self) -> None:
        if self._role is not None:
            self._role.release()
            self._role = None

    # ------------------------------------------------------------------ running
    def run_once(self) -> int:
        """Run every job queued or left running (a crashed run), oldest first, including jobs
        submitted meanwhile; returns how many finished (done or failed). Takes the writer role for
        the call when the worker does not hold it; 0 when another process is the writer. After
        :meth:`stop` it ends at the next batch boundary, leaving the job running (resumed later)."""
        took = not self.is_writer
        if not self._take_role():
            return 0
        try:
            with self._running:
                return self._run_pending()
        finally:
            if took:
                self._release_role()

    def _run_pending(self) -> int:
        finished = 0
        tried: set[int] = set()  # a job that could not be finished is not retried in the same call
        while not self._stop.is_set():
            job_n = self.queue.next_runnable(tried)
            if job_n is None:
                break
            tried.add(job_n)
            if self._run_job(job_n):
                finished += 1
        return finished

    def _run_job(self, job_n: int) -> bool:
        before, _ = self.queue.start(job_n)
        try:
            touched = self._apply_puts(job_n)
            touched = self._apply_deletes(job_n) or touched
            if self.queue.remaining(job_n):  # stopped between two batches: resumed later
                return False
            if before == "running" and not touched:
                # a crashed run committed its last batch but not the indexes' catch-up
                self.engine.sync()
            job = self.queue.finish(job_n)
        except Exception as exc:  # the worker cannot go on with this job (the store refuses writes...)
            log.error("ingestion job %s failed: %s: %s", self.queue.job_at(job_n).id, type(exc).__name__, exc)
            job = self.queue.finish(job_n, "failed", f"{type(exc).__name__}: {exc}")
        if self.on_finish is not None:
            self.on_finish(job)
        return True

    def _items(self, job_n: int, op: str, limit: int | None = None) -> Iterator[_ItemRow]:
        """(pos, doc id, item, existed) of the job's unapplied ``op`` items, in order, until stopped."""
        pos = self.queue.applied(job_n)
        left = limit
        while not self._stop.is_set() and (left is None or left > 0):
            page = _PAGE if left is None else min(_PAGE, left)
            rows = self.engine.store.query(
                "SELECT pos, doc_id, item, existed FROM job_items WHERE job = ? AND op = ? AND pos >= ?"
                " ORDER BY pos LIMIT ?", (job_n, op, pos, page))
            if not rows:
                return
            for row in rows:
                if self._stop.is_set():
                    return
                yield row
            pos = rows[-1][0] + 1
            if left is not None:
                left -= len(rows)

    def _documents(self, job_n: int) -> Iterator[Document]:
        for _, _, item, _ in self._items(job_n, "put"):
            yield document_from_json(item)

    def _apply_puts(self, job_n: int) -> bool:
        if not self.engine.store.query("SELECT 1 FROM job_items WHERE job = ? AND op = 'put' AND pos >= "
                                       "(SELECT applied FROM jobs WHERE n = ?) LIMIT 1", (job_n, job_n)):
            return False
        hook = functools.partial(_batch_hook, job_n)
        docs = self._documents(job_n)
        if self.batch is None:
            self.engine.insert(docs, on_batch=hook)
            return True
        while piece := list(islice(docs, self.batch)):
            self.engine.insert(piece, on_batch=hook)
        return True

    def _apply_deletes(self, job_n: int) -> bool:
        """Deletes in batches. Each batch first records which of its ids are stored, then deletes
        through the engine, then records the outcome: a re-run after a crash in between counts
        what the first run found, not the "not found" its own deletions left."""
        store, size = self.engine.store, self.batch or self.engine.settings.ingest_batch
        touched = False
        while not self._stop.is_set():
            rows = list(self._items(job_n, "delete", size))
            if not rows or rows[0][0] != self.queue.applied(job_n):  # documents left: they go first
                return touched
            ids = [r[1] for r in rows]
            if any(r[3] is None for r in rows):
                with store.transaction() as cur:
                    marks = ",".join("?" * len(ids))
                    stored = {r[0] for r in cur.execute(f"SELECT doc_id FROM documents WHERE doc_id IN ({marks})", ids)}
                    cur.executemany("UPDATE job_items SET existed = ? WHERE job = ? AND pos = ?",
                                    [(int(r[1] in stored), job_n, r[0]) for r in rows if r[3] is None])
                existed = {r[1] for r in rows if (r[1] in stored if r[3] is None else r[3])}
            else:
                existed = {r[1] for r in rows if r[3]}
            gone = existed | set(self.engine.delete(ids))
            touched = True
            missing = [JobError(d, None, "not found") for d in ids if d not in gone]
            with store.transaction() as cur:
                record_progress(cur, job_n, len(ids), {"deleted": len(ids) - len(missing), "failed": len(missing)},
                                missing)
        return touched

    # --------------------------------------------------------------- background
    def start(self) -> bool:
        """Run jobs in a background thread until :meth:`stop`. False (and no thread) when another
        process holds the writer role."""
        if self._thread is not None and self._thread.is_alive():
            return True
        if not self._take_role():
            return False
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="chronorag-ingest-worker", daemon=True)
        self._thread.start()
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                with self._running:
                    self._run_pending()
            except Exception:  # not even the failure could be recorded: try again later
                log.exception("the ingestion worker could not run its jobs; retrying in %.0f s", RETRY_S)
                self._stop.wait(RETRY_S)
                continue
            SUBMITTED.wait(POLL_S)
            SUBMITTED.clear()

    def stop(self, timeout: float = 30.0) -> None:
        """Finish the batch under way, stop, and give the writer role up. The job it was in stays
        ``running`` and resumes from there on the next run (here or in the next writer)."""
        self._stop.set()
        SUBMITTED.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
            if thread.is_alive():  # still in a batch: the role goes when the process does
                log.warning("the ingestion worker is still finishing a batch after %.0f s", timeout)
                return
        if not self._running.locked():
            self._release_role()
