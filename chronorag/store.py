"""The document/chunk store: SQLite (WAL), the single source of truth.

Every derived index (BM25 segments, FAISS, later the graph and KV caches) is rebuilt or caught up
from this store. Writes append to a change log (``changes``) inside the same transaction that
changes the data, so an index only has to remember the last sequence number it applied. Entries
every index has applied are trimmed (``trim_changes``); an index left behind the trimmed log is
rebuilt from the chunks instead (see :mod:`chronorag.indexing`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from chronorag.errors import UserFacingError
from chronorag.store_schema import SCHEMA, SCHEMA_VERSION
from chronorag.types import Chunk, ChunkDraft, Document, SearchFilters

__all__ = ["SCHEMA_VERSION", "Change", "DocumentWrite", "Store", "StoreError"]


class StoreError(UserFacingError):
    """The data directory holds something that is not a store this version can open."""


@dataclass(frozen=True)
class Change:
    """One entry of the change log: a chunk that appeared ('add') or disappeared ('del')."""

    seq: int
    op: str
    chunk_id: int
    doc_id: str


@dataclass(frozen=True)
class DocumentWrite:
    """A document to store with its chunks; ``content_hash`` decides whether anything changed."""

    document: Document
    content_hash: str
    chunks: Sequence[ChunkDraft]


def _ts(dt: datetime | None) -> float | None:
    return dt.timestamp() if dt is not None else None


def _from_iso(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class Store:
    """Thread-safe handle on one SQLite database; one writer at a time (SQLite's rule)."""

    def __init__(self, path: Path | str, create: bool = True) -> None:
        """``create=False`` opens only an existing store: a missing or empty file, or an SQLite
        database without chronorag's tables, is refused and left as it was."""
        self.path = Path(path)
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            target = str(self.path) if create else f"{self.path.absolute().as_uri()}?mode=rw"
            self._conn = sqlite3.connect(
                target, isolation_level=None, check_same_thread=False, timeout=30.0, uri=not create
            )
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot open the store {self.path}: {exc}") from None
        try:
            self._open(create)
        except sqlite3.DatabaseError as exc:  # someone else's file: refuse it, never write to it
            self._conn.close()
            raise StoreError(f"{self.path} is not a chronorag store ({exc})") from None

    def _open(self, create: bool) -> None:
        tables = {r[0] for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not create and "documents" not in tables:
            raise sqlite3.DatabaseError("no chronorag tables in it")
        if tables and "documents" not in tables:
            raise sqlite3.DatabaseError("an SQLite database without chronorag's tables")
        if "meta" in tables:
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row and int(row[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {row[0]} is newer than this chronorag's {SCHEMA_VERSION}; upgrade chronorag"
                )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        # 64 MiB page cache (default 2 MiB): bulk ingests insert into several secondary indexes in
        # random key order, and a cache that holds their hot pages keeps that off the disk
        self._conn.execute("PRAGMA cache_size=-65536")
        with self._lock:
            self._conn.executescript(SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Cursor]:
        """A write transaction: every write here, and extensions that keep their own tables in the
        store (the graph's facts), go through it."""
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise

    def query(self, sql: str, args: Sequence = ()) -> list[tuple]:
        """Read-only SQL for extensions; returns all rows."""
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def executescript(self, script: str) -> None:
        """Create an extension's tables (idempotent DDL)."""
        with self._lock:
            self._conn.executescript(script)

    # ------------------------------------------------------------------ writes
    def content_hashes(self, doc_ids: Iterable[str]) -> dict[str, str]:
        """Stored content hash per known document id (unknown ids are absent)."""
        ids = list(doc_ids)
        out: dict[str, str] = {}
        with self._lock:
            for start in range(0, len(ids), 500):
                part = ids[start : start + 500]
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT doc_id, content_hash FROM documents WHERE doc_id IN ({marks})", part
                )
                out.update(dict(rows.fetchall()))
        return out

    def write_documents(
        self,
        writes: Sequence[DocumentWrite],
        before_commit: Callable[[sqlite3.Cursor, dict[str, str]], None] | None = None,
    ) -> dict[str, str]:
        """Insert or replace documents with their chunks in ONE transaction.

        Returns ``{doc_id: 'new' | 'changed' | 'unchanged'}``. A document whose stored hash equals
        ``content_hash`` is left untouched, so re-running an ingestion never duplicates work. A
        changed document's new chunks keep the stored embeddings of its old chunks with the same
        text (vectors depend on the text alone), so a corrected date, a moved source file or an
        appended paragraph re-embeds only what is new.

        ``before_commit(cursor, outcome)`` runs inside the transaction, after the writes: what it
        writes (an ingestion job's progress) commits with the documents or not at all.
        """
        outcome: dict[str, str] = {}
        with self.transaction() as cur:
            for w in writes:
                doc = w.document
                row = cur.execute(
                    "SELECT content_hash FROM documents WHERE doc_id = ?", (doc.doc_id,)
                ).fetchone()
                if row is not None and row[0] == w.content_hash:
                    outcome[doc.doc_id] = "unchanged"
                    continue
                carried: dict[str, list[tuple[str, bytes]]] = {}
                if row is not None:
                    carried = self._vectors_by_text(cur, doc.doc_id)
                    self._delete_doc_rows(cur, doc.doc_id)
                cur.execute(
                    "INSERT INTO documents(doc_id, source, title, published_at, published_ts,"
                    " content_hash, text, metadata) VALUES (?,?,?,?,?,?,?,?)",
                    (
                        doc.doc_id,
                        doc.source,
                        doc.title,
                        doc.published_at.isoformat() if doc.published_at else None,
                        _ts(doc.published_at),
                        w.content_hash,
                        doc.text,
                        json.dumps(doc.metadata, ensure_ascii=False, sort_keys=True),
                    ),
                )
                ts = _ts(doc.published_at)
                for c in w.chunks:
                    cur.execute(
                        "INSERT INTO chunks(doc_id, ord, text, char_start, char_end, n_tokens,"
                        " published_ts, source) VALUES (?,?,?,?,?,?,?,?)",
                        (doc.doc_id, c.ord, c.text, c.char_start, c.char_end, c.n_tokens, ts,
                         doc.source),
                    )
                    chunk_id = cur.lastrowid
                    cur.executemany(
                        "INSERT OR IGNORE INTO embeddings(chunk_id, model, vec) VALUES (?, ?, ?)",
                        [(chunk_id, model, vec) for model, vec in carried.get(c.text, ())],
                    )
                    cur.execute(
                        "INSERT INTO changes(op, chunk_id, doc_id) VALUES ('add', ?, ?)",
                        (chunk_id, doc.doc_id),
                    )
                outcome[doc.doc_id] = "changed" if row is not None else "new"
            if before_commit is not None:
                before_commit(cur, outcome)
        return outcome

    def delete_documents(self, doc_ids: Iterable[str]) -> list[str]:
        """Delete documents, their chunks and embeddings; returns the ids that existed."""
        deleted: list[str] = []
        with self.transaction() as cur:
            for doc_id in doc_ids:
                if cur.execute("SELECT 1 FROM documents WHERE doc_id=?", (doc_id,)).fetchone():
                    self._delete_doc_rows(cur, doc_id)
                    deleted.append(doc_id)
        return deleted

    @staticmethod
    def _vectors_by_text(cur: sqlite3.Cursor, doc_id: str) -> dict[str, list[tuple[str, bytes]]]:
        out: dict[str, dict[str, bytes]] = {}
        rows = cur.execute(
            "SELECT c.text, e.model, e.vec FROM chunks c JOIN embeddings e ON e.chunk_id = c.chunk_id"
            " WHERE c.doc_id = ?",
            (doc_id,),
        )
        for text, model, vec in rows:
            out.setdefault(text, {}).setdefault(model, vec)
        return {text: list(by_model.items()) for text, by_model in out.items()}

    @staticmethod
    def _delete_doc_rows(cur: sqlite3.Cursor, doc_id: str) -> None:
        cur.execute(
            "INSERT INTO changes(op, chunk_id, doc_id) SELECT 'del', chunk_id, doc_id FROM chunks"
            " WHERE doc_id = ? ORDER BY chunk_id",
            (doc_id,),
        )
        cur.execute(
            "INSERT OR REPLACE INTO retired_chunks SELECT c.chunk_id, c.doc_id, c.ord, c.text,"
            " c.char_start, c.char_end, c.n_tokens, d.published_at, c.published_ts, c.source,"
            " (SELECT MAX(seq) FROM changes) FROM chunks c JOIN documents d USING (doc_id)"
            " WHERE c.doc_id = ?",
            (doc_id,),
        )
        cur.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))

    def purge_retired(self, applied_seq: int) -> int:
        """Forget retired chunks whose deletion every index has applied (``applied_seq``: the
        lowest applied sequence among them); returns how many went."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM retired_chunks WHERE retired_seq <= ? LIMIT 1",
                                  (int(applied_seq),)).fetchone() is None:
                return 0  # nothing to do: no write transaction for readers that are in step
        with self.transaction() as cur:
            return cur.execute("DELETE FROM retired_chunks WHERE retired_seq <= ?", (int(applied_seq),)).rowcount

    def put_embeddings(self, model: str, vectors: dict[int, np.ndarray]) -> None:
        """Cache embeddings so an index rebuild never re-embeds. Vectors of deleted chunks are dropped."""
        with self.transaction() as cur:
            cur.executemany(
                "INSERT OR REPLACE INTO embeddings(chunk_id, model, vec)"
                " SELECT ?, ?, ? WHERE EXISTS (SELECT 1 FROM chunks WHERE chunk_id = ?)",
                [(cid, model, np.asarray(v, dtype=np.float32).tobytes(), cid) for cid, v in vectors.items()],
            )

    # ------------------------------------------------------------------- reads
    def max_seq(self) -> int:
        """The newest sequence ever logged, trimmed entries included (AUTOINCREMENT keeps it)."""
        with self._lock:
            return self._max_seq()

    def _max_seq(self) -> int:
        row = self._conn.execute(
            "SELECT MAX(COALESCE((SELECT MAX(seq) FROM changes), 0),"
            " COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'changes'), 0))"
        ).fetchone()
        return int(row[0])

    def log_start(self) -> int:
        """Every entry after this sequence is in the log; earlier ones may have been trimmed."""
        with self._lock:
            row = self._conn.execute("SELECT MIN(seq) FROM changes").fetchone()
            return int(row[0]) - 1 if row[0] is not None else self._max_seq()

    def chunk_ids_added_after(self, seq: int) -> set[int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT chunk_id FROM changes WHERE seq > ? AND op = 'add'", (int(seq),)
            ).fetchall()
        return {r[0] for r in rows}

    def index_progress(self) -> dict[str, int]:
        """The applied sequence each derived index last reported, loaded in this process or not."""
        with self._lock:
            return dict(self._conn.execute("SELECT name, applied_seq FROM index_progress").fetchall())

    def record_index_progress(self, applied: dict[str, int]) -> None:
        """Remember indexes' applied sequences (after they committed them: never ahead of their files)."""
        known = self.index_progress()
        rows = [(name, int(seq)) for name, seq in applied.items() if known.get(name) != seq]
        if rows:
            with self.transaction() as cur:
                cur.executemany("INSERT OR REPLACE INTO index_progress(name, applied_seq) VALUES (?, ?)", rows)

    def trim_changes(self, through_seq: int) -> int:
        """Drop log entries up to ``through_seq``; returns how many went. The caller makes sure no
        index it wants to catch up incrementally is behind ``through_seq``."""
        with self._lock:
            if self._conn.execute("SELECT 1 FROM changes WHERE seq <= ? LIMIT 1",
                                  (int(through_seq),)).fetchone() is None:
                return 0
        with self.transaction() as cur:
            return cur.execute("DELETE FROM changes WHERE seq <= ?", (int(through_seq),)).rowcount

    def changes_since(self, seq: int, limit: int | None = None) -> list[Change]:
        sql = "SELECT seq, op, chunk_id, doc_id FROM changes WHERE seq > ? ORDER BY seq"
        args: tuple = (seq,)
        if limit is not None:
            sql += " LIMIT ?"
            args = (seq, limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [Change(*r) for r in rows]

    def changes_after(self, seq: int) -> int:
        """How many log entries follow ``seq`` (a range count on the primary key: cheap per read)."""
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM changes WHERE seq > ?", (seq,)).fetchone()[0])

    def live_chunk_count(self) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0])

    def embeddings(self, model: str, chunk_ids: Sequence[int]) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(chunk_ids), 500):
                part = list(chunk_ids[start : start + 500])
                marks = ",".join("?" * len(part))
                rows = self._conn.execute(
                    f"SELECT chunk_id, vec FROM embeddings WHERE model = ? AND chunk_id IN ({marks})",
                    [model, *part],
                ).fetchall()
                for cid, blob in rows:
                    out[cid] = np.frombuffer(blob, dtype=np.float32)
        return out

    _LIVE_CHUNKS = ("SELECT c.chunk_id, c.doc_id, c.ord, c.text, c.char_start, c.char_end, c.n_tokens,"
                    " d.published_at, c.source FROM chunks c JOIN documents d USING (doc_id) WHERE c.chunk_id")
    _RETIRED_CHUNKS = ("SELECT chunk_id, doc_id, ord, text, char_start, char_end, n_tokens, published_at,"
                       " source FROM retired_chunks WHERE chunk_id")

    def get_chunks(self, chunk_ids: Sequence[int], retired: bool = True) -> dict[int, Chunk]:
        """Live chunks, and (``retired``) retired ones that an index which has not applied their
        deletion may still return (see the ``retired_chunks`` table)."""
        selects = (self._LIVE_CHUNKS, self._RETIRED_CHUNKS) if retired else (self._LIVE_CHUNKS,)
        return {cid: Chunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _from_iso(r[7]), r[8])
                for cid, r in self._rows_by_chunk_id(selects, chunk_ids).items()}

    def _rows_by_chunk_id(self, selects: Sequence[str], chunk_ids: Sequence[int]) -> dict[int, tuple]:
        """Rows keyed by their first column (a chunk id), each id from the first ``select ... IN (ids)``
        that has it, in batches under SQLite's parameter limit."""
        found: dict[int, tuple] = {}
        with self._lock:
            for select in selects:
                ids = [int(c) for c in chunk_ids if int(c) not in found]
                for start in range(0, len(ids), 500):
                    part = ids[start : start + 500]
                    for row in self._conn.execute(f"{select} IN ({','.join('?' * len(part))})", part):
                        found[row[0]] = row
        return found

    def iter_chunks(self, batch_size: int = 2000) -> Iterator[list[Chunk]]:
        """All live chunks in id order, in batches (for index rebuilds)."""
        last = 0
        while True:
            with self._lock:
                rows = self._conn.execute(
                    "SELECT c.chunk_id, c.doc_id, c.ord, c.text, c.char_start, c.char_end,"
                    " c.n_tokens, d.published_at, c.source FROM chunks c JOIN documents d"
                    " USING (doc_id) WHERE c.chunk_id > ? ORDER BY c.chunk_id LIMIT ?",
                    (last, batch_size),
                ).fetchall()
            if not rows:
                return
            yield [Chunk(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _from_iso(r[7]), r[8]) for r in rows]
            last = rows[-1][0]

    def live_chunk_ids(self) -> np.ndarray:
        with self._lock:
            rows = self._conn.execute("SELECT chunk_id FROM chunks ORDER BY chunk_id").fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def chunk_ids_matching(self, filters: SearchFilters) -> np.ndarray:
        """Chunk ids that pass ``filters`` (sorted): both time bounds inclusive, as SearchFilters
        defines them. Undated chunks fail any time bound."""
        where, args = [], []
        if filters.since is not None:
            where.append("published_ts >= ?")
            args.append(filters.since.timestamp())
        if filters.until is not None:
            where.append("published_ts <= ?")
            args.append(filters.until.timestamp())
        for column, values in (("doc_id", filters.doc_ids), ("source", filters.sources)):
            if values:
                where.append(f"{column} IN ({','.join('?' * len(values))})")
                args.extend(sorted(values))
        cond = (" WHERE " + " AND ".join(where)) if where else ""
        with self._lock:
            rows = self._conn.execute(f"SELECT chunk_id FROM chunks{cond} ORDER BY chunk_id", args).fetchall()
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            # retired chunks too, while there are any: indexes behind a busy writer may still
            # return them (see get_chunks)
            if self._conn.execute("SELECT 1 FROM retired_chunks LIMIT 1").fetchone() is None:
                return ids
            rows = self._conn.execute(f"SELECT chunk_id FROM retired_chunks{cond}", args).fetchall()
        return np.union1d(ids, np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))

    def get_document(self, doc_id: str) -> Document | None:
        with self._lock:
            r = self._conn.execute(
                "SELECT doc_id, text, published_at, title, source, metadata FROM documents"
                " WHERE doc_id = ?",
                (doc_id,),
            ).fetchone()
        if r is None:
            return None
        return Document(r[0], r[1], _from_iso(r[2]), r[3], r[4], json.loads(r[5]))

    def doc_ids_with_prefix(self, prefix: str) -> list[str]:
        """Stored document ids that start with ``prefix``, sorted. An exact prefix: LIKE would read
        '%' and '_' in a folder's name as wildcards."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT doc_id FROM documents WHERE substr(doc_id, 1, ?) = ? ORDER BY doc_id",
                (len(prefix), prefix),
            ).fetchall()
        return [r[0] for r in rows]

    def doc_ids_of(self, chunk_ids: Sequence[int]) -> dict[int, str]:
        """Document id per chunk id, retired chunks included (an index may still list them)."""
        selects = ("SELECT chunk_id, doc_id FROM chunks WHERE chunk_id",
                   "SELECT chunk_id, doc_id FROM retired_chunks WHERE chunk_id")
        return {cid: row[1] for cid, row in self._rows_by_chunk_id(selects, chunk_ids).items()}

    def doc_chunk_ids(self, doc_id: str) -> list[int]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT chunk_id FROM chunks WHERE doc_id = ? ORDER BY ord", (doc_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            q = self._conn.execute
            return {
                "documents": q("SELECT COUNT(*) FROM documents").fetchone()[0],
                "undated_documents": q(
                    "SELECT COUNT(*) FROM documents WHERE published_at IS NULL"
                ).fetchone()[0],
                "chunks": q("SELECT COUNT(*) FROM chunks").fetchone()[0],
                "embeddings": q("SELECT COUNT(*) FROM embeddings").fetchone()[0],
                "tokens": q("SELECT COALESCE(SUM(n_tokens), 0) FROM chunks").fetchone()[0],
                "change_seq": self._max_seq(),
                "change_log_entries": q("SELECT COUNT(*) FROM changes").fetchone()[0],
            }

    def time_range(self) -> tuple[str | None, str | None]:
        with self._lock:
            r = self._conn.execute(
                "SELECT published_at FROM documents WHERE published_ts ="
                " (SELECT MIN(published_ts) FROM documents) LIMIT 1"
            ).fetchone()
            s = self._conn.execute(
                "SELECT published_at FROM documents WHERE published_ts ="
                " (SELECT MAX(published_ts) FROM documents) LIMIT 1"
            ).fetchone()
        return (r[0] if r else None, s[0] if s else None)
