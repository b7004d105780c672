"""The graph's tables inside the chronorag SQLite store: per-chunk extractions, summaries, applied_seq.

These rows are the graph's source of truth next to the chunks they came from. The networkx graph
is derived from them, so deleting a chunk means deleting its rows and rebuilding the entities they
touched, never re-running extraction. ``applied_seq`` lives in ``graph_meta`` and is written in the
same transaction as the rows.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import NamedTuple

from chronorag.graph.extract import Extraction
from chronorag.graph.model import FUNCTIONAL_RELATIONS, entity_key, fact_key
from chronorag.periods import node_for_span, quarter_months
from chronorag.store import Store

SCHEMA = """
CREATE TABLE IF NOT EXISTS graph_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS graph_chunks (
    chunk_id      INTEGER PRIMARY KEY,
    doc_id        TEXT NOT NULL,
    published_at  TEXT,
    lead          TEXT NOT NULL DEFAULT '',
    extractor     TEXT NOT NULL,
    recorded_ts   REAL NOT NULL
);
-- a day's chunks, for re-summarising its time node without loading the graph
CREATE INDEX IF NOT EXISTS graph_chunks_day ON graph_chunks(substr(published_at, 1, 10));
CREATE TABLE IF NOT EXISTS graph_mentions (
    chunk_id    INTEGER NOT NULL,
    entity_key  TEXT NOT NULL,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    n           INTEGER NOT NULL DEFAULT 1,
    alias       TEXT NOT NULL,
    PRIMARY KEY (chunk_id, entity_key, name)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS graph_mentions_entity ON graph_mentions(entity_key);
CREATE INDEX IF NOT EXISTS graph_mentions_alias ON graph_mentions(alias);
CREATE TABLE IF NOT EXISTS graph_facts (
    chunk_id      INTEGER NOT NULL,
    fact_key      TEXT NOT NULL,
    subject_key   TEXT NOT NULL,
    subject       TEXT NOT NULL,
    subject_type  TEXT NOT NULL,
    relation      TEXT NOT NULL,
    object_key    TEXT NOT NULL,
    object        TEXT NOT NULL,
    object_type   TEXT NOT NULL,
    t_start       TEXT,
    t_end         TEXT,
    granularity   TEXT,
    time_source   TEXT NOT NULL,
    description   TEXT NOT NULL,
    confidence    REAL NOT NULL,
    period        TEXT
);
CREATE INDEX IF NOT EXISTS graph_facts_period ON graph_facts(period);
CREATE INDEX IF NOT EXISTS graph_facts_chunk ON graph_facts(chunk_id);
CREATE INDEX IF NOT EXISTS graph_facts_subject ON graph_facts(subject_key);
CREATE INDEX IF NOT EXISTS graph_facts_object ON graph_facts(object_key);
CREATE TABLE IF NOT EXISTS graph_summaries (
    period      TEXT PRIMARY KEY,
    level       TEXT NOT NULL,
    summary     TEXT NOT NULL,
    top_items   TEXT NOT NULL,
    n_facts     INTEGER NOT NULL,
    n_chunks    INTEGER NOT NULL,
    updated_ts  REAL NOT NULL
);
"""

FACT_COLUMNS = (
    "chunk_id, fact_key, subject_key, subject, subject_type, relation, object_key, object,"
    " object_type, t_start, t_end, granularity, time_source, description, confidence"
)


# Rows are NamedTuples: a full-corpus graph holds about a million of them, and a NamedTuple is
# built ~10x faster than a frozen dataclass (it is a tuple; ``_make`` takes a table row as is).
class ChunkRow(NamedTuple):
    chunk_id: int
    doc_id: str
    published_at: datetime | None
    lead: str
    recorded_at: datetime


class FactRow(NamedTuple):
    chunk_id: int
    fact_key: str
    subject_key: str
    subject: str
    subject_type: str
    relation: str
    object_key: str
    object: str
    object_type: str
    t_start: datetime | None
    t_end: datetime | None
    granularity: str | None
    time_source: str
    description: str
    confidence: float


class MentionRow(NamedTuple):
    chunk_id: int
    entity_key: str
    name: str
    type: str
    n: int


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t is not None else None


def _dt(v: str | None) -> datetime | None:
    return datetime.fromisoformat(v) if v else None


def ensure_schema(store: Store) -> None:
    store.executescript(SCHEMA)


def read_meta(store: Store, key: str) -> str | None:
    rows = store.query("SELECT value FROM graph_meta WHERE key = ?", (key,))
    return rows[0][0] if rows else None


def write_meta(cur: sqlite3.Cursor, key: str, value: str) -> None:
    cur.execute("INSERT OR REPLACE INTO graph_meta(key, value) VALUES (?, ?)", (key, value))


def extraction_rows(chunk_id: int, extraction: Extraction) -> tuple[list[tuple], list[tuple]]:
    """(mention rows, fact rows) for one chunk, ready for executemany."""
    counts: dict[tuple[str, str], list] = {}
    for m in extraction.entities:
        k = entity_key(m.name)
        if not k:
            continue
        slot = counts.setdefault((k, m.name), [m.type, 0])
        slot[1] += 1
        if slot[0] == "ENT" and m.type != "ENT":
            slot[0] = m.type
    mentions = [(chunk_id, k, name, typ, n, name.casefold()) for (k, name), (typ, n) in counts.items()]
    facts = []
    seen: set[str] = set()
    for f in extraction.facts:
        sk, ok = entity_key(f.subject), entity_key(f.object)
        if not sk or not ok or sk == ok or not f.relation:
            continue
        t0 = f.time.start if f.time else None
        gran = f.time.granularity if f.time else None
        key = fact_key(sk, f.relation, ok, t0.timestamp() if t0 else None, gran)
        if key in seen:
            continue
        seen.add(key)
        facts.append(
            (chunk_id, key, sk, f.subject, f.subject_type, f.relation, ok, f.object, f.object_type,
             _iso(t0), _iso(f.time.end if f.time else None), gran, f.time_source,
             f.description, float(f.confidence),
             node_for_span(t0, f.time.end if f.time else None, gran))
        )
        for name, typ, k in ((f.subject, f.subject_type, sk), (f.object, f.object_type, ok)):
            if (k, name) not in counts:
                counts[(k, name)] = [typ, 1]
                mentions.append((chunk_id, k, name, typ, 1, name.casefold()))
    return mentions, facts


def insert_rows(cur: sqlite3.Cursor, chunk_rows: Sequence[tuple], mentions: Sequence[tuple], facts: Sequence[tuple]) -> None:
    """A whole batch of extracted chunks in three statements (per-chunk calls cost more than the rows)."""
    cur.executemany(
        "INSERT OR REPLACE INTO graph_chunks(chunk_id, doc_id, published_at, lead, extractor, recorded_ts)"
        " VALUES (?,?,?,?,?,?)",
        chunk_rows,
    )
    cur.executemany(
        "INSERT OR REPLACE INTO graph_mentions(chunk_id, entity_key, name, type, n, alias) VALUES (?,?,?,?,?,?)",
        mentions,
    )
    cur.executemany(f"INSERT INTO graph_facts({FACT_COLUMNS}, period) VALUES ({','.join('?' * 16)})", facts)


def delete_chunks(cur: sqlite3.Cursor, chunk_ids: Sequence[int]) -> set[str]:
    """Remove every row of these chunks; returns the entity keys they touched."""
    touched: set[str] = set()
    for start in range(0, len(chunk_ids), 500):
        part = [int(c) for c in chunk_ids[start : start + 500]]
        marks = ",".join("?" * len(part))
        for (k,) in cur.execute(f"SELECT entity_key FROM graph_mentions WHERE chunk_id IN ({marks})", part):
            touched.add(k)
        for s, o in cur.execute(f"SELECT subject_key, object_key FROM graph_facts WHERE chunk_id IN ({marks})", part):
            touched.update((s, o))
        for table in ("graph_mentions", "graph_facts", "graph_chunks"):
            cur.execute(f"DELETE FROM {table} WHERE chunk_id IN ({marks})", part)
    return touched


def existing_chunks(cur: sqlite3.Cursor, chunk_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for start in range(0, len(chunk_ids), 500):
        part = [int(c) for c in chunk_ids[start : start + 500]]
        marks = ",".join("?" * len(part))
        found.update(r[0] for r in cur.execute(f"SELECT chunk_id FROM graph_chunks WHERE chunk_id IN ({marks})", part))
    return found


def _fact_row(r: tuple) -> FactRow:
    return FactRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], _dt(r[9]), _dt(r[10]), r[11], r[12], r[13], r[14])


def _chunk_row(r: tuple) -> ChunkRow:
    return ChunkRow(r[0], r[1], _dt(r[2]), r[3], datetime.fromtimestamp(r[4], timezone.utc))


def _in_parts(run, sql: str, keys: Iterable, tail: str = "") -> list[tuple]:
    keys = list(keys)
    out: list[tuple] = []
    for start in range(0, len(keys), 400):
        part = keys[start : start + 400]
        marks = ",".join("?" * len(part))
        out.extend(run(sql.replace("{marks}", marks) + tail, part * sql.count("{marks}")))
    return out


def _runner(source):
    if isinstance(source, Store):
        return source.query
    return lambda sql, args: source.execute(sql, args).fetchall()


def facts_touching(source, keys: Iterable[str]) -> list[FactRow]:
    run = _runner(source)
    rows = _in_parts(
        run,
        f"SELECT {FACT_COLUMNS} FROM graph_facts WHERE subject_key IN ({{marks}}) OR object_key IN ({{marks}})",
        keys,
    )
    return [_fact_row(r) for r in rows]


def mentions_of(source, keys: Iterable[str]) -> list[MentionRow]:
    run = _runner(source)
    rows = _in_parts(run, "SELECT chunk_id, entity_key, name, type, n FROM graph_mentions WHERE entity_key IN ({marks})", keys)
    return [MentionRow._make(r) for r in rows]


def chunks_by_id(source, chunk_ids: Iterable[int]) -> list[ChunkRow]:
    run = _runner(source)
    rows = _in_parts(run, "SELECT chunk_id, doc_id, published_at, lead, recorded_ts FROM graph_chunks WHERE chunk_id IN ({marks})", chunk_ids)
    return [_chunk_row(r) for r in rows]


def all_rows(source) -> tuple[list[ChunkRow], list[MentionRow], list[FactRow]]:
    run = _runner(source)
    chunks = [_chunk_row(r) for r in run("SELECT chunk_id, doc_id, published_at, lead, recorded_ts FROM graph_chunks", ())]
    mentions = [MentionRow._make(r) for r in run("SELECT chunk_id, entity_key, name, type, n FROM graph_mentions", ())]
    facts = [_fact_row(r) for r in run(f"SELECT {FACT_COLUMNS} FROM graph_facts", ())]
    return chunks, mentions, facts


def write_summaries(cur: sqlite3.Cursor, rows: Iterable[tuple[str, str, str, list, int, int, float]]) -> None:
    for period, level, summary, items, n_facts, n_chunks, ts in rows:
        if n_facts == 0 and n_chunks == 0:
            cur.execute("DELETE FROM graph_summaries WHERE period = ?", (period,))
            continue
        cur.execute(
            "INSERT OR REPLACE INTO graph_summaries(period, level, summary, top_items, n_facts, n_chunks, updated_ts)"
            " VALUES (?,?,?,?,?,?,?)",
            (period, level, summary, json.dumps(items, ensure_ascii=False), n_facts, n_chunks, ts),
        )


def read_summaries(store: Store) -> dict[str, dict]:
    out = {}
    for period, level, summary, items, n_facts, n_chunks, ts in store.query(
        "SELECT period, level, summary, top_items, n_facts, n_chunks, updated_ts FROM graph_summaries"
    ):
        out[period] = {
            "period": period, "level": level, "summary": summary, "top_items": json.loads(items),
            "n_facts": n_facts, "n_chunks": n_chunks, "updated_ts": ts,
        }
    return out


def clear_all(cur: sqlite3.Cursor) -> None:
    for table in ("graph_mentions", "graph_facts", "graph_chunks", "graph_summaries", "graph_meta"):
        cur.execute(f"DELETE FROM {table}")


def keys_for_aliases(store: Store, strings: Iterable[str]) -> dict[str, set[str]]:
    """Entity keys per casefolded surface form or key (for queries without loading the graph)."""
    strings = list({x.casefold() for x in strings if x})
    out: dict[str, set[str]] = {}
    for alias, key in _in_parts(store.query, "SELECT DISTINCT alias, entity_key FROM graph_mentions WHERE alias IN ({marks})", strings):
        out.setdefault(alias, set()).add(key)
    for (key,) in _in_parts(store.query, "SELECT DISTINCT entity_key FROM graph_mentions WHERE entity_key IN ({marks})", strings):
        out.setdefault(key, set()).add(key)
    return out


def names_by_alias_prefix(store: Store, prefix: str, limit: int = 100_000) -> dict[str, str]:
    """Casefolded surface form -> display name for the aliases starting with ``prefix`` (casefolded),
    read through the alias index; bounded by ``limit`` mention rows (what-did-you-mean hints)."""
    prefix = prefix.casefold()
    if not prefix:
        return {}
    upper = prefix[:-1] + chr(min(ord(prefix[-1]) + 1, 0x10FFFF))
    rows = store.query("SELECT alias, name FROM graph_mentions WHERE alias >= ? AND alias < ? LIMIT ?",
                       [prefix, upper, int(limit)])
    out: dict[str, str] = {}
    for alias, name in rows:
        out.setdefault(alias, name)
    return out


def functional_rows_of(store: Store, keys: Iterable[str]) -> list[FactRow]:
    """Facts of functional relations touching ``keys`` (what their validity depends on)."""
    rels = list(FUNCTIONAL_RELATIONS)
    marks_rel = ",".join("?" * len(rels))
    out: list[FactRow] = []
    for r in _in_parts(
        lambda sql, args: store.query(sql, list(args) + rels),
        f"SELECT {FACT_COLUMNS} FROM graph_facts WHERE (subject_key IN ({{marks}}) OR object_key IN ({{marks}}))",
        keys,
        tail=f" AND relation IN ({marks_rel})",
    ):
        out.append(_fact_row(r))
    return out


def facts_in_period(store: Store, label: str, limit: int | None = None) -> list[FactRow]:
    """Facts whose time node is ``label`` or below it in the hierarchy (the first ``limit`` rows in
    insertion order when given: a year holds ~10^5 of them)."""
    if len(label) == 4:  # a year: every label starts with it
        where, args = "period LIKE ?", [label + "%"]
    elif "Q" in label:
        months = quarter_months(label)
        where = "period = ? OR " + " OR ".join("period LIKE ?" for _ in months)
        args = [label] + [m + "%" for m in months]
    else:
        where, args = "period LIKE ?", [label + "%"]
    tail = ""
    if limit is not None:
        tail, args = " ORDER BY rowid LIMIT ?", [*args, int(limit)]
    rows = store.query(f"SELECT {FACT_COLUMNS} FROM graph_facts WHERE {where}{tail}", args)
    return [_fact_row(r) for r in rows]


def facts_by_key(source, fact_keys: Iterable[str]) -> list[FactRow]:
    rows = _in_parts(_runner(source), f"SELECT {FACT_COLUMNS} FROM graph_facts WHERE fact_key IN ({{marks}})", fact_keys)
    return [_fact_row(r) for r in rows]


def mentions_in_chunks(source, chunk_ids: Iterable[int]) -> list[MentionRow]:
    rows = _in_parts(_runner(source), "SELECT chunk_id, entity_key, name, type, n FROM graph_mentions WHERE chunk_id IN ({marks})", [int(c) for c in chunk_ids])
    return [MentionRow._make(r) for r in rows]


def touched_labels(source, chunk_ids: Iterable[int]) -> set[str]:
    """Day labels of these chunks and the time nodes of their facts (read before deleting them)."""
    run, ids = _runner(source), [int(c) for c in chunk_ids]
    days = _in_parts(run, "SELECT DISTINCT substr(published_at, 1, 10) FROM graph_chunks"
                          " WHERE chunk_id IN ({marks}) AND published_at IS NOT NULL", ids)
    periods = _in_parts(run, "SELECT DISTINCT period FROM graph_facts WHERE chunk_id IN ({marks}) AND period IS NOT NULL", ids)
    return {r[0] for r in days} | {r[0] for r in periods}
