"""kill -9 a real ingesting process at several moments; the store stays consistent and a rerun completes."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

N_DOCS = 1500


def _write_corpus(path):
    with open(path, "w") as fh:
        for i in range(N_DOCS):
            text = f"Report {i} on harbour {i % 37} and the copper market. " * (2 + i % 5)
            fh.write(json.dumps({"id": f"d{i}", "text": text, "published_at": f"2023-08-{1 + i % 28:02d}"}) + "\n")


def _ingest(data, corpus):
    env = dict(os.environ, CHRONORAG_EMBEDDER="none", CHRONORAG_INGEST_BATCH="25", CHRONORAG_CHUNK_SIZE="32",
               CHRONORAG_CHUNK_OVERLAP="0")
    return subprocess.Popen([sys.executable, "-m", "chronorag.cli", "ingest", str(corpus), "--quiet",
                             "--data-dir", str(data)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _doc_count(db):
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def _check_consistent(db):
    con = sqlite3.connect(db)
    orphans = con.execute("SELECT COUNT(*) FROM chunks WHERE doc_id NOT IN (SELECT doc_id FROM documents)").fetchone()[0]
    chunkless = con.execute("SELECT COUNT(*) FROM documents WHERE doc_id NOT IN (SELECT doc_id FROM chunks)").fetchone()[0]
    # every chunk is in the log, unless the log was trimmed past it (chunk ids grow with the log)
    unlogged = con.execute("SELECT COUNT(*) FROM chunks WHERE chunk_id NOT IN"
                           " (SELECT chunk_id FROM changes WHERE op='add') AND chunk_id >="
                           " COALESCE((SELECT MIN(chunk_id) FROM changes WHERE op='add'), 1 << 62)").fetchone()[0]
    twice = con.execute("SELECT COUNT(*) - COUNT(DISTINCT chunk_id) FROM changes WHERE op='add'").fetchone()[0]
    chunks = con.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    docs = con.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    con.close()
    assert orphans == 0 and chunkless == 0 and unlogged == 0 and twice == 0
    return docs, chunks


@pytest.mark.slow
@pytest.mark.parametrize("kill_after_docs", [1, 400, N_DOCS])
def test_kill_9_then_rerun(tmp_path, kill_after_docs):
    corpus = tmp_path / "c.jsonl"
    _write_corpus(corpus)
    data = tmp_path / "data"
    db = data / "store.sqlite3"
    proc = _ingest(data, corpus)
    deadline = time.time() + 120
    while _doc_count(db) < kill_after_docs and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    _check_consistent(db)
    rerun = _ingest(data, corpus)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err.decode()
    docs, chunks = _check_consistent(db)
    assert docs == N_DOCS
    # the same corpus ingested cleanly elsewhere gives the same chunk count: no duplicates
    clean = _ingest(tmp_path / "clean", corpus)
    clean.communicate(timeout=300)
    assert _check_consistent(tmp_path / "clean" / "store.sqlite3") == (docs, chunks)
    # and the BM25 index covers exactly the live chunks
    from chronorag.config import load_settings
    from chronorag.engine import ChronoRAG

    rag = ChronoRAG(load_settings(env={}, data_dir=data, embedder="none", chunk_size=32, chunk_overlap=0))
    ids, _ = rag.bm25.search("report harbour copper market", k=100_000)
    assert sorted(map(int, ids)) == sorted(rag.store.live_chunk_ids().tolist())
    rag.close()
