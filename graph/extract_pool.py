"""Rule extraction across forked worker processes: on a large ingest it is the graph's main cost.

Workers are forked after jieba's dictionary is loaded, so they share it instead of each loading
it again; chunks go out and results (the caller's ``finish`` of each extraction, e.g. ready table
rows, smaller to pickle than the extraction) come back, in slices small enough to balance.

An :class:`ExtractionPool` stays open across the batches of one catch-up, so the next batch can be
submitted before the current one is committed: the workers extract while the parent writes.

Workers exit when their parent dies, even by kill -9: forked, they hold copies of its descriptors,
the data directory's write lock and writer role among them, and an orphaned pool would keep a
restarted writer out (and block on its queue forever).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor

from chronorag.graph.extraction import Extractor
from chronorag.types import Chunk

_worker_job: tuple[Extractor, Callable | None] | None = None


PARENT_POLL_S = 0.2


def _exit_with_parent(parent_pid: int) -> None:
    """Polls getppid rather than setting PR_SET_PDEATHSIG: that signal fires when the forking
    *thread* ends, and a pool made by a server's request thread would die with the request."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_POLL_S)
        os._exit(1)

    if os.getppid() != parent_pid:  # the parent died between the fork and now
        os._exit(1)
    threading.Thread(target=watch, name="chronorag-parent-watch", daemon=True).start()


def _init(extractor: Extractor, finish: Callable | None, parent_pid: int) -> None:
    global _worker_job
    _exit_with_parent(parent_pid)
    _worker_job = (extractor, finish)


def _run(part: list[Chunk]) -> list[tuple[int, object]]:
    assert _worker_job is not None
    extractor, finish = _worker_job
    out = []
    for c in part:
        ext = extractor.extract(c.text, c.published_at)
        out.append((c.chunk_id, finish(c, ext) if finish is not None else ext))
    return out


class PendingExtraction:
    """Extraction of one batch under way in the pool; :meth:`result` waits for it."""

    def __init__(self, chunk_ids: tuple[int, ...], futures: list[Future]) -> None:
        self.chunk_ids = chunk_ids
        self._futures = futures

    def result(self) -> dict[int, object]:
        out: dict[int, object] = {}
        for fut in self._futures:
            out.update(fut.result())
        return out

    def cancel(self) -> None:
        for fut in self._futures:
            fut.cancel()


class ExtractionPool:
    """``workers`` forked processes running one extractor (and ``finish``) until :meth:`close`."""

    def __init__(self, extractor: Extractor, workers: int, finish: Callable | None = None) -> None:
        warm = getattr(extractor, "warm_up", None)
        if warm is not None:
            warm()  # load dictionaries once, before the fork
        self.workers = workers
        self._pool = ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("fork"),
            initializer=_init,
            initargs=(extractor, finish, os.getpid()),
        )

    def submit(self, chunks: Sequence[Chunk]) -> PendingExtraction:
        items = list(chunks)
        step = max(64, len(items) // (self.workers * 8))
        futures = [self._pool.submit(_run, items[i : i + step]) for i in range(0, len(items), step)]
        return PendingExtraction(tuple(c.chunk_id for c in items), futures)

    def worker_pids(self) -> list[int]:
        """The forked workers' process ids (started on the first submit)."""
        return sorted((getattr(self._pool, "_processes", None) or {}).keys())

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "ExtractionPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def extract_in_processes(
    extractor: Extractor, chunks: Sequence[Chunk], workers: int, finish: Callable | None = None
) -> dict[int, object]:
    with ExtractionPool(extractor, workers, finish) as pool:
        return pool.submit(chunks).result()
