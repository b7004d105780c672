"""``chronorag worker`` and ``chronorag watch``: the ingestion jobs from the command line.

``worker`` runs the store's queued jobs as the data directory's one writer. ``watch PATH`` keeps
the store in step with a folder through jobs: each pass reads the folder as ``chronorag ingest
PATH --format dir --prune`` would (same ids, same dates) and queues only what differs from the
store: new and changed files, and deletes for stored documents of the folder whose files are gone.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chronorag.cli import EXIT_PARTIAL, MAX_ERRORS_SHOWN, _open_engine, _settings
from chronorag.cli_args import UsageError
from chronorag.datadir import WRITER_ROLE_NAME
from chronorag.jobs import Job, JobError, JobQueue, error_of
from chronorag.types import Document, LoadError, one_line
from chronorag.worker import IngestWorker

EXIT_INTERRUPTED = 130
EXIT_JOB_FAILED = 1
WATCH_DEBOUNCE_MS = 800  # a burst of saves (an editor, a git checkout) becomes one pass


def _writer_pid(data_dir: Path) -> str:
    try:
        return (data_dir / WRITER_ROLE_NAME).read_text().strip() or "?"
    except OSError:
        return "?"


def _another_writer(data_dir: Path) -> str:
    return f"another process (pid {_writer_pid(data_dir)}) is the writer for {data_dir}"


def _job_printer(quiet: bool):
    def show(job: Job) -> None:
        if quiet:
            return
        listed = [e for e in job.errors if e.doc_id is not None or job.state != "failed"]
        for err in listed[:MAX_ERRORS_SHOWN]:
            where = f"{one_line(err.doc_id)}" + (f":{err.line}" if err.line is not None else "")
            print(f"skipped {where}: {err.error}" if err.doc_id else f"skipped {err.error}", file=sys.stderr)
        if len(listed) > MAX_ERRORS_SHOWN:
            print(f"... and {len(listed) - MAX_ERRORS_SHOWN} more errors", file=sys.stderr)
        print(job.summary_line(), flush=True)
        if job.state == "failed":
            print(f"chronorag: error: job {job.id} failed: {job.errors[-1].error}", file=sys.stderr)

    return show


def _exit_code(jobs: list[Job]) -> int:
    if any(j.state == "failed" for j in jobs):
        return EXIT_JOB_FAILED
    return EXIT_PARTIAL if any(j.counts["failed"] for j in jobs) else 0


@contextmanager
def _finish_batch_on_interrupt(worker: IngestWorker) -> Iterator[threading.Event]:
    """The first Ctrl-C asks the worker to stop after the batch under way (the event says it came);
    a second one interrupts at once (the transaction under way rolls back)."""
    interrupted = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield interrupted
        return

    def first(signum, frame) -> None:
        interrupted.set()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print("chronorag: interrupted; finishing the batch under way (Ctrl-C again to stop now)", file=sys.stderr)
        worker.stop(timeout=0)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield interrupted
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _open_engine(settings) as engine:
        worker = IngestWorker(engine)
        finished: list[Job] = []
        show = _job_printer(args.quiet)

        def on_finish(job: Job) -> None:
            finished.append(job)
            show(job)

        worker.on_finish = on_finish
        if not worker._take_role():
            raise UsageError(f"{_another_writer(settings.data_dir)}; it runs the queued jobs")
        try:
            if args.once:
                with _finish_batch_on_interrupt(worker) as interrupted:
                    worker.run_once()
                if interrupted.is_set():
                    return EXIT_INTERRUPTED
                if not finished and not args.quiet:
                    print("no jobs queued")
                return _exit_code(finished)
            worker.start()
            if not args.quiet:
                print(f"worker: running ingestion jobs for {settings.data_dir} (Ctrl-C to stop)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                print("chronorag: interrupted; finishing the batch under way", file=sys.stderr)
                worker.stop()
                return EXIT_INTERRUPTED
        finally:
            worker.stop(timeout=0)


@dataclass(frozen=True)
class Queued:
    """A pass's job and what went into it."""

    job: Job
    writes: int
    deletes: int
    errors: int


class FolderSync:
    """What a watched folder's pass queues: the difference between the folder and the store, as
    the store will stand once the jobs this watch queued before are applied."""

    def __init__(self, engine, queue: JobQueue, path: Path) -> None:
        from chronorag.ingest.loaders_dir import id_prefix
        from chronorag.ingest.pipeline import chunker_signature

        self.engine, self.queue, self.path = engine, queue, path
        self.prefix = id_prefix(path)
        s = engine.settings
        self._signature = chunker_signature(s.chunk_size, s.chunk_overlap)
        self._pending: dict[str, str | None] = {}  # id -> content hash queued, or None: a delete queued
        self._jobs: list[str] = []  # this watch's jobs not known finished
        self.source = f"watch:{self.prefix}"
        # load errors already queued, each reported once: a file that stays unreadable must not
        # make every pass (every `watch --once` from cron) a new job; seeded from the last one
        rows = engine.store.query(
            "SELECT doc_id, line, error FROM job_errors WHERE job = (SELECT MAX(j.n) FROM jobs j WHERE j.source = ?"
            " AND EXISTS (SELECT 1 FROM job_errors e WHERE e.job = j.n))", (self.source,))
        self._reported: set[JobError] = {JobError(*r) for r in rows}

    def _expected(self, stored: dict[str, str]) -> dict[str, str | None]:
        self._jobs = [j for j in self._jobs if (job := self.queue.get(j)) is not None and not job.finished]
        if not self._jobs:  # everything queued is applied (or failed): the store says it all
            self._pending.clear()
        return {**stored, **self._pending}

    def run_pass(self) -> Queued | None:
        """Read the folder and queue what differs; None when nothing does."""
        from chronorag.ingest.loaders import load
        from chronorag.ingest.pipeline import content_hash

        store = self.engine.store
        records = list(load(self.path, "dir", default_tz=self.engine.settings.default_tz))
        docs = [r for r in records if isinstance(r, Document)]
        errors = [r for r in records if isinstance(r, LoadError)]
        hashes = {d.doc_id: content_hash(d, self._signature) for d in docs}
        stored_ids = store.doc_ids_with_prefix(self.prefix)
        expected = self._expected({**store.content_hashes(stored_ids), **store.content_hashes(hashes)})
        writes = [d for d in docs if expected.get(d.doc_id) != hashes[d.doc_id]]
        # what --prune keeps: every file read, or that failed to load; everything below an unreadable folder
        keep = set(hashes) | {e.doc_id for e in errors if e.doc_id}
        folders = tuple(k for k in keep if k.endswith("/"))
        deletes = [d for d in sorted(set(stored_ids) | {k for k, v in expected.items() if k.startswith(self.prefix)})
                   if d not in keep and not d.startswith(folders) and expected.get(d) is not None]
        shown = {error_of(e) for e in errors}
        fresh = [e for e in errors if error_of(e) not in self._reported]
        self._reported = shown
        if not writes and not deletes and not fresh:
            return None
        job = self.queue.submit([*writes, *fresh], source=self.source, deletes=deletes)
        self._pending.update({d.doc_id: hashes[d.doc_id] for d in writes})
        self._pending.update(dict.fromkeys(deletes))
        self._jobs.append(job.id)
        return Queued(job, len(writes), len(deletes), len(fresh))


def cmd_watch(args: argparse.Namespace) -> int:
    path: Path = args.path
    if not path.is_dir():
        raise UsageError(f"not a folder: {path}" if path.exists() else f"no such folder: {path}")
    settings = _settings(args)
    with _open_engine(settings, create=True) as engine:
        queue = JobQueue(engine.store)
        try:
            sync = FolderSync(engine, queue, path)
        except ValueError as exc:  # a folder name that is not UTF-8: no id could be stored
            raise UsageError(str(exc)) from None
        worker = None if args.no_worker else IngestWorker(engine, queue)
        if worker is not None and not worker._take_role():
            print(f"chronorag: warning: {_another_writer(settings.data_dir)}; it applies the jobs this watch queues",
                  file=sys.stderr)
            worker = None
        show = _job_printer(args.quiet)
        if worker is not None:
            worker.on_finish = show
        try:
            return _watch(args, path, sync, queue, worker, show)
        finally:
            if worker is not None:
                worker.stop()


def _one_pass(args: argparse.Namespace, sync: FolderSync) -> Job | None:
    try:
        queued = sync.run_pass()
    except OSError as exc:  # the folder itself cannot be read now
        raise UsageError(str(exc)) from None
    if queued is None:
        return None
    if not args.quiet:
        unreadable = f", {queued.errors} unreadable" if queued.errors else ""
        print(f"job {queued.job.id} queued: {queued.writes} file(s) to write, {queued.deletes} to delete{unreadable}",
              flush=True)
    return queued.job


def _watch(args, path: Path, sync: FolderSync, queue: JobQueue, worker: IngestWorker | None,
           show: Callable[[Job], None]) -> int:
    import watchfiles

    if args.once:
        job = _one_pass(args, sync)
        if job is None:
            if not args.quiet:
                print(f"nothing to do: the store holds {path} as it is")
            return 0
        if args.no_worker:
            return 0
        if worker is None:  # another process is the writer: its worker runs the job
            show(job := queue.wait(job.id))
            return _exit_code([job])
        with _finish_batch_on_interrupt(worker) as interrupted:
            worker.run_once()
        return EXIT_INTERRUPTED if interrupted.is_set() else _exit_code([queue.get(job.id)])
    if worker is not None:
        worker.start()
    _one_pass(args, sync)
    if not args.quiet:
        print(f"watching {path} (Ctrl-C to stop)", flush=True)
    try:
        for _ in watchfiles.watch(path, debounce=WATCH_DEBOUNCE_MS, raise_interrupt=True):
            try:
                _one_pass(args, sync)
            except UsageError as exc:  # gone for now (unmounted, renamed): wait for it to come back
                print(f"chronorag: warning: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("chronorag: interrupted; finishing the batch under way", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0
