"""The store's tables. Bump SCHEMA_VERSION when a release changes them in a way an older
chronorag cannot read (it then refuses the store instead of misreading it)."""

SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id        TEXT PRIMARY KEY,
    source        TEXT NOT NULL DEFAULT '',
    title         TEXT,
    published_at  TEXT,
    published_ts  REAL,
    content_hash  TEXT NOT NULL,
    text          TEXT NOT NULL,
    metadata      TEXT NOT NULL DEFAULT '{}',
    ingested_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id      INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id        TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    ord           INTEGER NOT NULL,
    text          TEXT NOT NULL,
    char_start    INTEGER NOT NULL,
    char_end      INTEGER NOT NULL,
    n_tokens      INTEGER NOT NULL,
    published_ts  REAL,
    source        TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id, ord);
CREATE INDEX IF NOT EXISTS chunks_ts ON chunks(published_ts);
CREATE TABLE IF NOT EXISTS embeddings (
    chunk_id  INTEGER NOT NULL REFERENCES chunks(chunk_id) ON DELETE CASCADE,
    model     TEXT NOT NULL,
    vec       BLOB NOT NULL,
    PRIMARY KEY (chunk_id, model)
) WITHOUT ROWID;
-- Chunks of changed or deleted documents, kept until every index has applied their deletion: a
-- reader whose indexes are behind a busy writer still gets the text of the hits those indexes
-- return (the version they indexed), instead of losing every hit of a document being replaced.
CREATE TABLE IF NOT EXISTS retired_chunks (
    chunk_id      INTEGER PRIMARY KEY,
    doc_id        TEXT NOT NULL,
    ord           INTEGER NOT NULL,
    text          TEXT NOT NULL,
    char_start    INTEGER NOT NULL,
    char_end      INTEGER NOT NULL,
    n_tokens      INTEGER NOT NULL,
    published_at  TEXT,
    published_ts  REAL,
    source        TEXT NOT NULL DEFAULT '',
    retired_seq   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    op        TEXT NOT NULL CHECK (op IN ('add', 'del')),
    chunk_id  INTEGER NOT NULL,
    doc_id    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS index_progress (
    name         TEXT PRIMARY KEY,
    applied_seq  INTEGER NOT NULL
);
"""
