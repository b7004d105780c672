"""Rule extraction across forked worker processes: on a large ingest it is the graph's main cost.

Workers are forked after jieba's dictionary is loaded, so they share it instead of each loading
it again; chunks go out and results (the caller's ``finish`` of each extraction, e.g. ready table
rows, smaller to pickle than the extraction) come back, in slices small enough to balance.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from chronorag.graph.extract import Extractor
from chronorag.types import Chunk

_worker_job: tuple[Extractor, Callable | None] | None = None


def _init(extractor: Extractor, finish: Callable | None) -> None:
    global _worker_job
    _worker_job = (extractor, finish)


def _run(part: list[Chunk]) -> list[tuple[int, object]]:
    assert _worker_job is not None
    extractor, finish = _worker_job
    out = []
    for c in part:
        ext = extractor.extract(c.text, c.published_at)
        out.append((c.chunk_id, finish(c, ext) if finish is not None else ext))
    return out


def extract_in_processes(
    extractor: Extractor, chunks: Sequence[Chunk], workers: int, finish: Callable | None = None
) -> dict[int, object]:
    warm = getattr(extractor, "warm_up", None)
    if warm is not None:
        warm()  # load dictionaries once, before the fork
    items = list(chunks)
    step = max(64, len(items) // (workers * 8))
    parts = [items[i : i + step] for i in range(0, len(items), step)]
    out: dict[int, object] = {}
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init,
        initargs=(extractor, finish),
    ) as pool:
        for result in pool.map(_run, parts):
            out.update(result)
    return out
