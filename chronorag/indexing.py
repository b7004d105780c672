"""The contract between the store and every derived index, and the catch-up loop that drives it.

An index remembers the last change-log sequence it applied (persisted together with its data,
atomically). Writers (ingest, ``sync``, the ingestion worker) feed it what it missed with
:func:`catch_up`, so a crash at any point leaves an index that is merely behind, never wrong.
Readers never run an unbounded catch-up: :func:`backlog` says how far behind an index is, and a
read applies a backlog only when it is within the index's :attr:`DerivedIndex.read_backlog`.

The log would otherwise grow with every change forever, so :func:`trim_change_log` drops what
every index has applied. An index found behind the trimmed log (one turned off for a long time,
or whose files were deleted) is rebuilt from the store's chunks, which is always possible.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence

from chronorag.store import Change, Store
from chronorag.types import Chunk

log = logging.getLogger(__name__)

# Log entries kept for indexes this process has not loaded (the graph while it is turned off, the
# KV cache between `answer` runs): they catch up incrementally when they come back, unless they
# fell this far behind, in which case they rebuild from the store instead of pinning the log.
KEEP_FOR_UNLOADED = 200_000

Progress = Callable[[int], None]


class DerivedIndex(ABC):
    """Anything rebuilt from the store: BM25 segments, FAISS, the temporal graph, KV caches.

    The catch-up loop calls only the methods below; the optional ones have no-op defaults, so an
    index overrides what it needs and nothing is probed for.
    """

    name: str = "index"
    # Log entries a read may apply itself before answering: about a second of this index's work.
    # A larger backlog is left to writers and reported as stale.
    read_backlog: int = 2000
    # False for an index that only reacts to deletions (KV caches not warmed on ingest): a rebuild
    # then reads no chunks.
    wants_added: bool = True

    @property
    @abstractmethod
    def applied_seq(self) -> int:
        """The last change-log sequence whose effect is durable in this index."""

    @abstractmethod
    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        """Add chunks and drop chunk ids (in memory); nothing is durable until :meth:`commit`."""

    @abstractmethod
    def commit(self, seq: int) -> None:
        """Persist the index together with ``seq`` atomically."""

    @abstractmethod
    def reset(self) -> None:
        """Forget everything (before a full rebuild from the store)."""

    def refresh(self) -> bool:
        """Adopt what another process committed (its files or rows), so a long-lived reader does
        not redo a writer's work; returns whether anything was adopted."""
        return False

    def before_catch_up(self) -> None:
        """Index-specific preparation before the log is applied (the graph redoes its rows when its
        extractor changed)."""

    def prefetch(self, chunks: Sequence[Chunk]) -> None:
        """The next window's chunks, given before the current one commits (work can overlap)."""

    def report_progress(self, step: Progress | None) -> None:
        """While a window is applied, ``step(n)`` may be called as ``n`` of its chunks are done (the
        dense index embeds in batches), so a long window shows progress; None ends it."""

    def finish_catch_up(self) -> None:
        """Deferred work once the log is exhausted (the graph's period summaries)."""

    def end_catch_up(self) -> None:
        """Runs last after every catch-up, finished or not (release workers)."""

    def stats(self) -> dict:
        """What ``chronorag stats`` shows about this index."""
        return {}

    def close(self) -> None:
        """Release files and threads."""


def net_changes(changes: Sequence[Change]) -> tuple[list[int], list[int]]:
    """Collapse a window of the log into (chunk ids to add, chunk ids to delete).

    A chunk added and deleted inside the same window is neither; ids are never reused, so the
    last op per id decides.
    """
    last: dict[int, str] = {}
    first: dict[int, str] = {}
    for ch in changes:
        first.setdefault(ch.chunk_id, ch.op)
        last[ch.chunk_id] = ch.op
    adds = [cid for cid, op in last.items() if op == "add"]
    dels = [cid for cid, op in last.items() if op == "del" and first[cid] != "add"]
    return adds, dels


def backlog(store: Store, index: DerivedIndex) -> int:
    """How much work catching ``index`` up would take: log entries after its sequence, or every
    live chunk when it must be rebuilt (it is behind the trimmed log)."""
    if index.applied_seq < store.log_start():
        return store.live_chunk_count()
    return store.changes_after(index.applied_seq)


def _window(store: Store, after_seq: int, batch: int) -> tuple[int, list[Chunk], list[int], int] | None:
    """The next window of the log: (last seq, chunks to add, chunk ids to delete, entries)."""
    changes = store.changes_since(after_seq, limit=batch)
    if not changes:
        return None
    add_ids, del_ids = net_changes(changes)
    chunks = store.get_chunks(add_ids, retired=False)
    # A chunk added in this window may already be gone (deleted later): skip it.
    return changes[-1].seq, [chunks[c] for c in add_ids if c in chunks], del_ids, len(changes)


def catch_up(store: Store, index: DerivedIndex, batch: int = 20000, progress: Progress | None = None) -> int:
    """Apply the store's changes the index has not seen; returns how many log entries were applied.

    Each window is committed before the next is read, so an interrupted catch-up (even kill -9)
    resumes from its last committed window and applies nothing twice.
    """
    applied = 0
    try:
        index.before_catch_up()
        if index.applied_seq < store.log_start():
            applied += _rebuild(store, index, batch, progress)
        window = _window(store, index.applied_seq, batch)
        while window is not None:
            seq, added, del_ids, n = window
            reported = _apply_reporting(index, added, del_ids, n, progress)
            window = _window(store, seq, batch)
            if window is not None:
                index.prefetch(window[1])
            index.commit(seq)
            applied += n
            if progress is not None and n > reported:
                progress(n - reported)
        index.finish_catch_up()
        return applied
    finally:
        index.end_catch_up()


def _apply_reporting(index: DerivedIndex, added: Sequence[Chunk], deleted: Sequence[int], n: int,
                     progress: Progress | None) -> int:
    """``index.apply`` with the index's own progress passed on (at most ``n`` in all); returns how
    much it reported, so the rest is reported when the window commits."""
    if progress is None:
        index.apply(added, deleted)
        return 0
    reported = 0

    def step(done: int) -> None:
        nonlocal reported
        done = min(done, n - reported)
        if done > 0:
            reported += done
            progress(done)

    index.report_progress(step)
    try:
        index.apply(added, deleted)
    finally:
        index.report_progress(None)
    return reported


def _snapshot(store: Store, start: int, batch: int) -> Iterator[list[Chunk]]:
    """The live chunks the store held at log sequence ``start``: those the log adds later are left
    to the replay, and those it deletes later are gone already (deleting them is a no-op)."""
    later = store.chunk_ids_added_after(start)
    for chunks in store.iter_chunks(batch):
        kept = [c for c in chunks if c.chunk_id not in later]
        if kept:
            yield kept


def _rebuild(store: Store, index: DerivedIndex, batch: int, progress: Progress | None) -> int:
    """Rebuild ``index`` from the chunks as of the log's start; returns how many it applied.

    Batches in between are committed at sequence 0, so a crash part-way leaves an index that is
    still behind the log and is rebuilt again on the next start.
    """
    start = store.log_start()
    if index.applied_seq > 0:  # a new index (first use, files deleted) is simply built
        log.warning("the %s index is behind the trimmed change log (at %d, log starts after %d): "
                    "rebuilding it from the store", index.name, index.applied_seq, start)
    index.reset()
    applied = 0
    batches = _snapshot(store, start, batch) if index.wants_added else iter(())
    chunks = next(batches, None)
    while chunks is not None:
        reported = _apply_reporting(index, chunks, [], len(chunks), progress)
        following = next(batches, None)
        if following is not None:
            index.prefetch(following)
        index.commit(0 if following is not None else start)
        applied += len(chunks)
        if progress is not None and len(chunks) > reported:
            progress(len(chunks) - reported)
        chunks = following
    if index.applied_seq != start:  # nothing was live then
        index.commit(start)
    return applied


def trim_change_log(store: Store, loaded: Mapping[str, int], keep_for_unloaded: int | None = None) -> int:
    """Drop log entries every index has applied; returns how many went.

    ``loaded``: applied sequences of the indexes this process holds (they are never left behind).
    Indexes it does not hold are known by the progress they last recorded in the store; they hold
    the log back by at most ``keep_for_unloaded`` entries.
    """
    keep = KEEP_FOR_UNLOADED if keep_for_unloaded is None else keep_for_unloaded
    newest = store.max_seq()
    floor = min(loaded.values(), default=newest)
    for name, seq in store.index_progress().items():
        if name not in loaded and seq >= newest - keep:
            floor = min(floor, seq)
    return store.trim_changes(floor)
