"""The contract between the store and every derived index, and the catch-up loop that drives it.

An index remembers the last change-log sequence it applied (persisted together with its data,
atomically). On start-up, and after every ingestion, :func:`catch_up` feeds it what it missed, so
a crash at any point leaves an index that is merely behind, never wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from chronorag.store import Change, Store
from chronorag.types import Chunk


class DerivedIndex(Protocol):
    """Anything rebuilt from the store: BM25 segments, FAISS, the temporal graph, KV caches."""

    name: str

    @property
    def applied_seq(self) -> int: ...

    def apply(self, added: Sequence[Chunk], deleted: Sequence[int]) -> None:
        """Add chunks and drop chunk ids (in memory); nothing is durable until :meth:`commit`."""

    def commit(self, seq: int) -> None:
        """Persist the index together with ``seq`` atomically."""

    def reset(self) -> None:
        """Forget everything (before a full rebuild from the store)."""

    # Optional: ``refresh()`` adopts what another process committed (its files or rows), so a
    # long-lived reader does not redo a writer's work in its query path.


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


def _window(store: Store, after_seq: int, batch: int) -> tuple[int, list[Chunk], list[int], int] | None:
    """The next window of the log: (last seq, chunks to add, chunk ids to delete, entries)."""
    changes = store.changes_since(after_seq, limit=batch)
    if not changes:
        return None
    add_ids, del_ids = net_changes(changes)
    chunks = store.get_chunks(add_ids, retired=False)
    # A chunk added in this window may already be gone (deleted later): skip it.
    return changes[-1].seq, [chunks[c] for c in add_ids if c in chunks], del_ids, len(changes)


def catch_up(store: Store, index: DerivedIndex, batch: int = 20000, progress=None) -> int:
    """Apply the store's changes the index has not seen; returns how many log entries were applied.

    Optional hooks: ``prefetch(chunks)`` receives the next window before the current one commits
    (the graph starts extracting it in its workers), ``finish_catch_up()`` runs once the log is
    exhausted (deferred work: graph summaries), ``end_catch_up()`` always runs last.
    """
    applied = 0
    prefetch = getattr(index, "prefetch", None)
    try:
        window = _window(store, index.applied_seq, batch)
        while window is not None:
            seq, added, del_ids, n = window
            index.apply(added, del_ids)
            window = _window(store, seq, batch)
            if prefetch is not None and window is not None:
                prefetch(window[1])
            index.commit(seq)
            applied += n
            if progress is not None:
                progress(n)
        finish = getattr(index, "finish_catch_up", None)
        if finish is not None:
            finish()
        return applied
    finally:
        end = getattr(index, "end_catch_up", None)
        if end is not None:
            end()
