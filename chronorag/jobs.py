"""Durable ingestion jobs, kept in the store: submitted once, run by the one writer, never lost.

A job is a row in ``jobs`` and its documents and deletes are rows in ``job_items``, written in the
one transaction of :meth:`JobQueue.submit`, so a job the caller got an id for survives any crash
and restart. The worker (:class:`chronorag.worker.IngestWorker`) applies the items in order and
advances the job's ``applied`` cursor, counts and errors in the SAME transaction as the batch of
documents they count (the ``on_batch`` hook of :func:`chronorag.ingest.pipeline.ingest_documents`):
after a kill -9 the job resumes at its first uncommitted item, nothing applied twice or counted twice.

Records that cannot become documents (LoadErrors, invalid Documents, ids repeated in the job) are
the job's errors from the start; they count as done and failed right away.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from chronorag.ingest.checks import doc_id_problem, document_problem
from chronorag.store import Store
from chronorag.types import Document, LoadError, one_line

if TYPE_CHECKING:
    from chronorag.worker import IngestWorker

__all__ = ["COUNT_KEYS", "FINISHED", "IngestWorker", "Job", "JobError", "JobQueue", "STATES"]

STATES = ("queued", "running", "done", "failed")
FINISHED = frozenset({"done", "failed"})
COUNT_KEYS = ("new", "changed", "unchanged", "deleted", "failed")
_PLACEHOLDER_SOURCES = {"<python>", ""}  # a LoadError's source when no file was read

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    n            INTEGER PRIMARY KEY AUTOINCREMENT,  -- submission order (oldest runs first)
    job_id       TEXT NOT NULL UNIQUE,
    state        TEXT NOT NULL,
    source       TEXT NOT NULL,
    total        INTEGER NOT NULL,
    done         INTEGER NOT NULL DEFAULT 0,
    applied      INTEGER NOT NULL DEFAULT 0,         -- job_items below this position are applied
    n_new        INTEGER NOT NULL DEFAULT 0,
    n_changed    INTEGER NOT NULL DEFAULT 0,
    n_unchanged  INTEGER NOT NULL DEFAULT 0,
    n_deleted    INTEGER NOT NULL DEFAULT 0,
    n_failed     INTEGER NOT NULL DEFAULT 0,
    created_at   TEXT NOT NULL,
    finished_at  TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, n);
-- documents first (op 'put', item = the document as JSON), then deletes (op 'delete'); 'existed'
-- is what a delete found when its batch began, kept so a re-run after a crash counts it the same
CREATE TABLE IF NOT EXISTS job_items (
    job      INTEGER NOT NULL,
    pos      INTEGER NOT NULL,
    op       TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    item     TEXT,
    existed  INTEGER,
    PRIMARY KEY (job, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_errors (
    job      INTEGER NOT NULL,
    ord      INTEGER NOT NULL,
    doc_id   TEXT,
    line     INTEGER,
    error    TEXT NOT NULL,
    PRIMARY KEY (job, ord)
) WITHOUT ROWID;
"""

_COLUMNS = ("n, job_id, state, source, total, done, n_new, n_changed, n_unchanged, n_deleted, n_failed,"
            " created_at, finished_at")
# Wakes an idle worker of this process at once; workers elsewhere notice new jobs by polling.
SUBMITTED = threading.Event()


@dataclass(frozen=True)
class JobError:
    """One item of a job that did not land (or, with no doc_id, why the whole job failed)."""

    doc_id: str | None
    line: int | None
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"doc_id": self.doc_id, "line": self.line, "error": self.error}


@dataclass(frozen=True)
class Job:
    """A job as it stands: ``done`` of ``total`` items applied; ``counts`` sum to ``done``."""

    id: str
    state: str
    done: int
    total: int
    counts: Mapping[str, int]
    errors: tuple[JobError, ...]
    created_at: datetime
    finished_at: datetime | None
    source: str = field(default="api")

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "done": self.done,
            "total": self.total,
            "counts": dict(self.counts),
            "errors": [e.to_dict() for e in self.errors],
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    def summary_line(self) -> str:
        c = self.counts
        return (f"job {self.id} {self.state}: {self.done}/{self.total} new={c['new']} changed={c['changed']} "
                f"unchanged={c['unchanged']} deleted={c['deleted']} failed={c['failed']}")


def _now() -> datetime:
    return datetime.now(timezone.utc)


def error_of(record: LoadError) -> JobError:
    """A loader's error as a job error; the file is named when no id says which record it was."""
    message = one_line(record.message)
    if record.doc_id is None and record.source not in _PLACEHOLDER_SOURCES:
        message = f"{one_line(record.source)}: {message}"
    return JobError(record.doc_id, record.line, message)


def document_json(doc: Document) -> str:
    return json.dumps({"id": doc.doc_id, "text": doc.text,
                       "published_at": doc.published_at.isoformat() if doc.published_at else None,
                       "title": doc.title, "source": doc.source, "metadata": doc.metadata},
                      ensure_ascii=False, sort_keys=True)


def document_from_json(item: str) -> Document:
    d = json.loads(item)
    published = datetime.fromisoformat(d["published_at"]) if d.get("published_at") else None
    return Document(d["id"], d["text"], published, d.get("title"), d.get("source") or "", d.get("metadata") or {})


def record_progress(cur: sqlite3.Cursor, job_n: int, items: int, counts: Mapping[str, int],
                    errors: Sequence[JobError] = ()) -> None:
    """A batch's bookkeeping, on the cursor of the transaction that applied it: ``items`` more
    applied and done, their counts, their errors."""
    if sum(counts.get(k, 0) for k in COUNT_KEYS) != items:  # every item in exactly one count
        raise AssertionError(f"job counts {dict(counts)} do not add up to the batch's {items} item(s)")
    cur.execute(
        "UPDATE jobs SET applied = applied + ?, done = done + ?, n_new = n_new + ?, n_changed = n_changed + ?,"
        " n_unchanged = n_unchanged + ?, n_deleted = n_deleted + ?, n_failed = n_failed + ? WHERE n = ?",
        (items, items, *(int(counts.get(k, 0)) for k in COUNT_KEYS), job_n),
    )
    _add_errors(cur, job_n, errors)


def _add_errors(cur: sqlite3.Cursor, job_n: int, errors: Sequence[JobError]) -> None:
    if not errors:
        return
    start = cur.execute("SELECT COALESCE(MAX(ord), -1) + 1 FROM job_errors WHERE job = ?", (job_n,)).fetchone()[0]
    cur.executemany("INSERT INTO job_errors(job, ord, doc_id, line, error) VALUES (?,?,?,?,?)",
                    [(job_n, start + i, e.doc_id, e.line, e.error) for i, e in enumerate(errors)])


@dataclass
class _Prepared:
    """What submit writes: the items to apply and what failed before the job even ran."""

    puts: list[tuple[str, str]] = field(default_factory=list)  # (doc id, document JSON)
    deletes: list[str] = field(default_factory=list)
    errors: list[JobError] = field(default_factory=list)
    total: int = 0


def _prepare(records: Iterable[Document | LoadError], deletes: Iterable[str]) -> _Prepared:
    out = _Prepared()
    seen: set[str] = set()
    for rec in records:
        out.total += 1
        if isinstance(rec, LoadError):
            out.errors.append(error_of(rec))
            continue
        problem = document_problem(rec)
        if problem is None and rec.doc_id in seen:  # as the loaders do: the first record of an id wins
            problem = "duplicate id in this job (the first is kept)"
        if problem is not None:
            doc_id = getattr(rec, "doc_id", None)
            out.errors.append(JobError(doc_id if isinstance(doc_id, str) and not doc_id_problem(doc_id) else None,
                                       None, problem))
            continue
        seen.add(rec.doc_id)
        out.puts.append((rec.doc_id, document_json(rec)))
    dropped: set[str] = set()
    for doc_id in deletes:
        out.total += 1
        problem = f"a delete takes a document id string, got {type(doc_id).__name__}" if not isinstance(doc_id, str) \
            else doc_id_problem(doc_id)
        if problem is None and doc_id in dropped:
            problem = "duplicate delete in this job"
        elif problem is None and doc_id in seen:  # which one was meant? neither is applied blindly
            problem = "both written and deleted by this job (the write is kept)"
        if problem is not None:
            shown = doc_id if isinstance(doc_id, str) and not doc_id_problem(doc_id) else None
            out.errors.append(JobError(shown, None, f"delete: {problem}"))
            continue
        dropped.add(doc_id)
        out.deletes.append(doc_id)
    return out


class JobQueue:
    """The jobs of one store: submit, look up, list. Any process may submit; one worker runs them."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.executescript(SCHEMA)

    def submit(self, records: Iterable[Document | LoadError] | Document, source: str = "api",
               deletes: Iterable[str] = ()) -> Job:
        """Queue documents to write (new, changed or unchanged) and ids to delete, in one transaction;
        returns the queued job. Documents are applied before deletes. Bad records (LoadErrors,
        invalid Documents, a repeated id) are the job's errors at once, counted done and failed."""
        if isinstance(records, Document):
            records = [records]
        elif isinstance(records, (str, bytes, dict)) or not isinstance(records, Iterable):
            raise ValueError(f"records must be Documents (one or an iterable), got {type(records).__name__}")
        if isinstance(deletes, str):
            deletes = [deletes]
        elif isinstance(deletes, (bytes, dict)) or not isinstance(deletes, Iterable):
            raise ValueError(f"deletes must be document ids (one or an iterable), got {type(deletes).__name__}")
        if not isinstance(source, str):
            raise ValueError(f"source must be a string, got {type(source).__name__}")
        prepared = _prepare(records, deletes)
        items = [(pos, "put", doc_id, item) for pos, (doc_id, item) in enumerate(prepared.puts)]
        items += [(len(items) + i, "delete", doc_id, None) for i, doc_id in enumerate(prepared.deletes)]
        failed = len(prepared.errors)
        created = _now()
        while True:
            job_id = secrets.token_urlsafe(9)
            try:
                with self.store.transaction() as cur:
                    cur.execute("INSERT INTO jobs(job_id, state, source, total, done, n_failed, created_at)"
                                " VALUES (?, 'queued', ?, ?, ?, ?, ?)",
                                (job_id, source, prepared.total, failed, failed, created.isoformat()))
                    n = cur.lastrowid
                    cur.executemany("INSERT INTO job_items(job, pos, op, doc_id, item) VALUES (?,?,?,?,?)",
                                    [(n, *row) for row in items])
                    _add_errors(cur, n, prepared.errors)
                break
            except sqlite3.IntegrityError:  # a job id drawn twice (72 random bits): draw again
                continue
        SUBMITTED.set()
        job = self.get(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        if not isinstance(job_id, str):
            return None
        rows = self.store.query(f"SELECT {_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,))
        return self._job(rows[0]) if rows else None

    def list(self, offset: int = 0, limit: int = 50) -> list[Job]:
        """Jobs newest first."""
        for name, value in (("offset", offset), ("limit", limit)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        rows = self.store.query(f"SELECT {_COLUMNS} FROM jobs ORDER BY n DESC LIMIT ? OFFSET ?", (limit, offset))
        return [self._job(r) for r in rows]

    def depth(self) -> int:
        """Jobs queued or running."""
        return int(self.store.query("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")[0][0])

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """The job once done or failed, or as it stands when ``timeout`` seconds have passed.
        KeyError for an unknown id. Polls, so the worker may be in another process."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.02
        while True:
            job = self.get(job_id)
            if job is None:
                raise KeyError(job_id)
            if job.finished or (deadline is not None and time.monotonic() >= deadline):
                return job
            left = pause if deadline is None else max(0.0, min(pause, deadline - time.monotonic()))
            time.sleep(left)
            pause = min(pause * 1.5, 0.25)

    # ---------------------------------------------------------------- for the worker
    def next_runnable(self, skip: Iterable[int] = ()) -> int | None:
        """The oldest job queued or left running (a run that crashed), as its row number."""
        skip = sorted(set(skip))
        marks = f" AND n NOT IN ({','.join('?' * len(skip))})" if skip else ""
        rows = self.store.query(f"SELECT n FROM jobs WHERE state IN ('queued', 'running'){marks} ORDER BY n LIMIT 1",
                                skip)
        return int(rows[0][0]) if rows else None

    def job_at(self, job_n: int) -> Job:
        return self._job(self.store.query(f"SELECT {_COLUMNS} FROM jobs WHERE n = ?", (job_n,))[0])

    def start(self, job_n: int) -> tuple[str, int]:
        """Mark a job running; returns (its state before, its applied cursor)."""
        with self.store.transaction() as cur:
            state, applied = cur.execute("SELECT state, applied FROM jobs WHERE n = ?", (job_n,)).fetchone()
            if state == "queued":
                cur.execute("UPDATE jobs SET state = 'running' WHERE n = ?", (job_n,))
        return state, int(applied)

    def applied(self, job_n: int) -> int:
        return int(self.store.query("SELECT applied FROM jobs WHERE n = ?", (job_n,))[0][0])

    def remaining(self, job_n: int) -> int:
        rows = self.store.query("SELECT COUNT(*) FROM job_items WHERE job = ? AND pos >= "
                                "(SELECT applied FROM jobs WHERE n = ?)", (job_n, job_n))
        return int(rows[0][0])

    def finish(self, job_n: int, state: str = "done", message: str | None = None) -> Job:
        """End a job (its items are dropped: a finished job is never run again)."""
        with self.store.transaction() as cur:
            cur.execute("UPDATE jobs SET state = ?, finished_at = ? WHERE n = ?", (state, _now().isoformat(), job_n))
            cur.execute("DELETE FROM job_items WHERE job = ?", (job_n,))
            if message is not None:
                _add_errors(cur, job_n, [JobError(None, None, one_line(message))])
        return self.job_at(job_n)

    def _job(self, row: Sequence) -> Job:
        n, job_id, state, source, total, done, *counts, created, finished = row
        errors = self.store.query("SELECT doc_id, line, error FROM job_errors WHERE job = ? ORDER BY ord", (n,))
        return Job(job_id, state, int(done), int(total), dict(zip(COUNT_KEYS, map(int, counts))),
                   tuple(JobError(*e) for e in errors), datetime.fromisoformat(created),
                   datetime.fromisoformat(finished) if finished else None, source)


def __getattr__(name: str):
    # the worker lives in its own module (it drives the engine); importing it here eagerly would
    # make `import chronorag.worker` circular
    if name == "IngestWorker":
        from chronorag.worker import IngestWorker

        return IngestWorker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
